"""TinyLM's forward pass: causality, padding, the structure the logit-lens adapter reads."""

import pytest
import torch

from core.errors import UserError
from core.models.tinylm import TinyLM, TinyLMConfig


def tiny(positional="learned", **overrides) -> TinyLM:
    torch.manual_seed(0)
    shape = dict(vocab_size=23, n_layers=2, n_heads=2, d_model=16, context_length=12, positional=positional)
    return TinyLM(TinyLMConfig(**(shape | overrides))).eval()


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_changing_a_future_token_never_changes_earlier_logits(positional):
    model = tiny(positional)
    ids = torch.randint(0, 23, (1, 12), generator=torch.Generator().manual_seed(1))
    logits = model(ids)
    for pos in range(12):
        changed = ids.clone()
        changed[0, pos] = (changed[0, pos] + 1) % 23
        new_logits = model(changed)
        torch.testing.assert_close(new_logits[:, :pos], logits[:, :pos], rtol=0, atol=1e-6)
        assert not torch.allclose(new_logits[:, pos], logits[:, pos])  # the changed position itself does see it


def test_left_padded_batch_matches_unbatched():
    model = tiny()
    short, long = [3, 4, 5], [7, 8, 9, 10, 11, 2, 1]
    pad = 0
    ids = torch.tensor([[pad] * 4 + short, long])
    mask = torch.tensor([[0] * 4 + [1] * 3, [1] * 7])
    position_ids = mask.cumsum(-1) - 1
    batched = model(ids, attention_mask=mask, position_ids=position_ids)
    torch.testing.assert_close(batched[0, 4:], model(torch.tensor([short]))[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[1], model(torch.tensor([long]))[0], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(batched).all()  # padding rows do not produce NaN


def test_trace_agrees_with_forward_and_blocks():
    model = tiny("sinusoidal")
    ids = torch.randint(0, 23, (2, 9))
    trace = model.trace(ids)
    torch.testing.assert_close(trace.logits, model(ids))
    assert len(trace.residuals) == 3 and len(trace.patterns) == 2
    torch.testing.assert_close(trace.residuals[0], model.embed(ids))
    torch.testing.assert_close(trace.residuals[1], model.blocks[0](trace.residuals[0]))
    torch.testing.assert_close(model.lm_head(model.ln_f(trace.residuals[-1])), trace.logits)
    pattern = trace.patterns[1]
    assert pattern.shape == (2, 2, 9, 9)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 2, 9))
    assert pattern.triu(diagonal=1).abs().max() == 0  # nothing attends to the future


def test_out_proj_reads_concatenated_heads():
    """Zeroing head 1's slice of out_proj's input removes exactly head 1's contribution."""
    model = tiny()
    block, d_head = model.blocks[0], model.config.d_head
    x = torch.randn(1, 5, 16)
    captured = {}
    hook = block.attn.out_proj.register_forward_hook(lambda m, inp, out: captured.update(heads=inp[0]))
    out, _ = block.attn(x)
    hook.remove()
    heads = captured["heads"]
    only_head_0 = heads.clone()
    only_head_0[..., d_head:] = 0
    head_1 = heads - only_head_0
    w, b = block.attn.out_proj.weight, block.attn.out_proj.bias
    torch.testing.assert_close(out, only_head_0 @ w.T + head_1 @ w.T + b)
    torch.testing.assert_close(head_1 @ w.T, heads[..., d_head:] @ w[:, d_head:].T)


def test_structure_for_the_adapter():
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight  # tied unembedding
    assert isinstance(model.blocks, torch.nn.ModuleList) and len(model.blocks) == 2
    assert isinstance(model.ln_f, torch.nn.LayerNorm)
    assert model.blocks[0].attn.out_proj.in_features == 16
    assert model.config.model_type == "tinylm"


def test_init_scales_residual_writes_with_depth():
    model = tiny(n_layers=8, d_model=64, n_heads=4)
    std = model.blocks[0].mlp.out_proj.weight.std().item()
    assert std == pytest.approx(0.02 / 4, rel=0.1)  # 0.02 / sqrt(2 * 8 layers)
    assert model.blocks[0].mlp.in_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_dropout_only_in_training_mode():
    model = tiny(dropout=0.5)
    ids = torch.randint(0, 23, (2, 8))
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(d_model=30, n_heads=4), "divisible"),
        (dict(n_layers=0), "n_layers"),
        (dict(positional="rotary"), "positional"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_shapes_are_user_errors(bad, message):
    with pytest.raises(UserError, match=message):
        TinyLMConfig(**(dict(vocab_size=10) | bad))


def test_too_long_input_is_a_user_error():
    with pytest.raises(UserError, match="context"):
        tiny()(torch.zeros(1, 13, dtype=torch.long))
