"""Every supported architecture on a tiny random model of its own config: the residual stream its adapter
describes adds up to the model's own numbers (logits, block outputs, padding, norms, shapes)."""

import re
from functools import lru_cache

import pytest
import torch
from torch import nn

from core.errors import UserError
from core.models import ModelHandle, wrap_model
from core.models.adapters import ADAPTERS, ARCHITECTURES, adapter_for, missing, text_config
from core.interventions.hooks import run_body
from tests import tiny

PROMPTS = ["The capital of France is Paris. The capital of Germany is", "one two three"]
CASES = tiny.ARCHITECTURE_CASES
TOLERANCE = 1e-4  # float32, max abs difference

# What each case's config sets (tests/tiny.py), so a factor read from the wrong field shows.
LOGIT_SCALE = {"granite": 1 / 8, "granitemoe": 1 / 8, "cohere": 0.5, "cohere2": 0.5}
RESIDUAL_SCALE = {"granite": 0.22, "granitemoe": 0.22}
EMBEDDING_SCALE = {"granite": 12.0, "granitemoe": 12.0}
PARALLEL = {"cohere", "cohere2", "phi", "falcon", "stablelm/parallel", "gpt_neox"}
MOE_LAYERS = {  # which of the 3 layers hold a mixture of experts
    **dict.fromkeys(("mixtral", "olmoe", "phimoe", "gpt_oss", "granitemoe", "hunyuan_v1_moe"), (0, 1, 2)),
    **dict.fromkeys(("qwen3_moe", "qwen2_moe"), (0, 2)),  # mlp_only_layers=[1]
    **dict.fromkeys(("deepseek_v2", "deepseek_v3", "dots1", "glm4_moe", "ernie4_5_moe"), (1, 2)),
}
LEARNED_POSITIONS = {"gpt2", "gpt_bigcode", "tinylm"}  # residual 0 = token + position embedding
@lru_cache(maxsize=None)
def _built(case: str) -> tuple[ModelHandle, None]:
    """The case's handle (from ``wrap_model``, as a real load builds it)."""
    model, tok = tiny.model_for(case)
    return wrap_model(model, tok, f"tiny-{case}"), None


def _handle(case: str) -> ModelHandle:
    return _built(case)[0]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _worst(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None = None) -> float:
    """Max abs difference, over the real (unpadded) positions when ``rows`` is the attention mask."""
    diff = (a.float() - b.float()).abs()
    return float(diff[rows.bool()].max() if rows is not None else diff.max())


def _record(handle: ModelHandle, batch, sites: dict) -> dict:
    """One pass of the decoder stack; ``sites`` name -> (module, "in" | "out"); returns clones of what they saw.
    Clones: Falcon adds the attention into the MLP's output tensor in place, after the hook has run."""
    seen = {}

    def register():
        hooks = []
        for name, (module, where) in sites.items():
            if where == "in":
                def hook(module, args, kwargs, name=name):
                    seen[name] = (args[0] if args else kwargs["hidden_states"]).clone()
                hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                hooks.append(module.register_forward_hook(
                    lambda module, args, output, name=name: seen.__setitem__(name, _first(output).clone())))
        return hooks

    hooks = register()
    try:
        with torch.inference_mode():
            run_body(handle, batch)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("case", CASES)
def test_logits_rebuilt_from_the_last_residual_equal_the_models_own(case):
    handle = _handle(case)
    adapter, model = handle.adapter, handle.model
    batch = handle.encode(PROMPTS)
    residual = handle.residuals(batch)[-1]  # [prompt, pos, d_model], before the final norm
    with torch.inference_mode():
        logits = adapter.unembed(model)(adapter.final_norm(model)(residual)).float() * adapter.logit_scale(model)
    cap = adapter.softcap(model)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    own = handle.logits(batch)
    assert _worst(logits, own, batch.attention_mask) < TOLERANCE
    assert adapter.logit_scale(model) == pytest.approx(LOGIT_SCALE.get(case, 1.0))
    if case in LOGIT_SCALE:  # the scale is not a no-op here: leaving it out would be wrong
        assert _worst(logits / adapter.logit_scale(model), own, batch.attention_mask) > 0.1
    # Residual 0 is the embedding as the first block sees it.
    if case not in LEARNED_POSITIONS:
        first = handle.residuals(batch)[0]
        with torch.inference_mode():
            embedded = adapter.embed(model)(batch.input_ids) * adapter.embedding_scale(model)
        assert _worst(first, embedded) < TOLERANCE
    assert adapter.embedding_scale(model) == pytest.approx(EMBEDDING_SCALE.get(case, 1.0))


@pytest.mark.parametrize("case", CASES)
def test_handle_decode_of_the_last_residual_equals_the_logits(case):
    handle = _handle(case)
    batch = handle.encode(PROMPTS)
    decoded = handle.decode(handle.residuals(batch)[-1])
    assert _worst(decoded, handle.logits(batch), batch.attention_mask) < TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_block_output_is_its_input_plus_the_scaled_branches(case):
    handle = _handle(case)
    adapter, model = handle.adapter, handle.model
    layers = adapter.layers(model)
    sites = {}
    for i, layer in enumerate(layers):
        sites |= {(i, "in"): (layer, "in"), (i, "out"): (layer, "out"),
                  (i, "attn"): (adapter.attn_branch(layer), "out"), (i, "mlp"): (adapter.mlp_branch(layer), "out")}
    batch = handle.encode(PROMPTS)
    seen = _record(handle, batch, sites)
    scale = adapter.residual_scale(model)
    assert scale == pytest.approx(RESIDUAL_SCALE.get(case, 1.0))
    for i in range(len(layers)):
        rebuilt = seen[i, "in"] + scale * seen[i, "attn"] + scale * seen[i, "mlp"]
        assert _worst(rebuilt, seen[i, "out"], batch.attention_mask) < TOLERANCE, f"layer {i}"
        assert seen[i, "mlp"].abs().max() > 0.1  # the MLP site is not an empty branch


@pytest.mark.parametrize("case", CASES)
def test_parallel_blocks_feed_the_mlp_from_the_block_input(case):
    """Shift what the attention adds by a random vector: a sequential block's MLP sees it, a parallel one's does not."""
    handle = _handle(case)
    adapter, model = handle.adapter, handle.model
    layer = adapter.layers(model)[0]
    assert adapter.parallel(model) == adapter.parallel(layer) == (case in PARALLEL)
    batch = handle.encode(PROMPTS[:1])
    plain = _record(handle, batch, {"mlp": (adapter.mlp(layer), "in")})["mlp"]
    shift = torch.randn(handle.d_model, generator=torch.Generator().manual_seed(0))

    def shifted(module, args, output):
        return (output[0] + shift, *output[1:]) if isinstance(output, tuple) else output + shift

    hook = adapter.attn_branch(layer).register_forward_hook(shifted)
    try:
        moved = _record(handle, batch, {"mlp": (adapter.mlp(layer), "in")})["mlp"]
    finally:
        hook.remove()
    assert (_worst(plain, moved) < TOLERANCE) == (case in PARALLEL)


@pytest.mark.parametrize("case", CASES)
def test_mlp_site_and_its_output_projection(case):
    """Dense layers: the MLP's output is its output projection's output. MoE layers: no single projection."""
    handle = _handle(case)
    adapter, model = handle.adapter, handle.model
    layers = adapter.layers(model)
    assert tuple(i for i, layer in enumerate(layers) if adapter.is_moe(layer)) == MOE_LAYERS.get(case, ())
    dense = [i for i, layer in enumerate(layers) if not adapter.is_moe(layer)]
    assert all(adapter.mlp_out_proj(layers[i]) is None for i in MOE_LAYERS.get(case, ()))
    sites = {}
    for i in dense:
        sites |= {(i, "mlp"): (adapter.mlp(layers[i]), "out"), (i, "proj"): (adapter.mlp_out_proj(layers[i]), "out")}
    batch = handle.encode(PROMPTS)
    seen = _record(handle, batch, sites)
    for i in dense:
        assert _worst(seen[i, "mlp"], seen[i, "proj"]) == 0.0, f"layer {i}"


@pytest.mark.parametrize("case", CASES)
def test_wrap_model_describes_the_model(case):
    handle, _ = _built(case)
    model, config = handle.model, text_config(handle.model)
    assert handle.n_layers == (getattr(config, "num_hidden_layers", None) or config.n_layers) == 3
    assert handle.n_heads == (getattr(config, "num_attention_heads", None) or config.n_heads) == 4
    assert handle.d_model == handle.adapter.d_model(model) == 64
    assert handle.vocab_size == len(handle.tokenizer)
    attention = handle.adapter.attention(handle.adapter.layers(model)[0])
    head_dim = next((getattr(attention, name) for name in ("v_head_dim", "head_dim", "head_size")
                     if isinstance(getattr(attention, name, None), int)), 64 // 4)
    assert handle.head_dim == head_dim


@pytest.mark.parametrize("case", CASES)
def test_left_padding_leaves_the_last_residuals_unchanged(case):
    handle = _handle(case)
    batch = handle.encode(PROMPTS)
    assert len(set(batch.lengths)) == 2
    together = handle.residuals(batch)[:, :, -1]  # [layer, prompt, d_model]
    for p, prompt in enumerate(PROMPTS):
        alone = handle.residuals(handle.encode([prompt]))[:, 0, -1]
        assert _worst(together[:, p], alone) < TOLERANCE, prompt


def _norms(handle: ModelHandle) -> list[nn.Module]:
    """Every norm module of the decoder stack, the final norm included (a vision tower's are not the adapter's)."""
    named = r"(RMS|Layer)Norm(1P)?$"
    found = [m for m in handle.adapter.base(handle.model).modules()
             if isinstance(m, (nn.LayerNorm, nn.RMSNorm)) or re.search(named, type(m).__name__)]
    final = handle.adapter.final_norm(handle.model)
    return found + ([final] if all(final is not m for m in found) else [])


@pytest.mark.parametrize("case", CASES)
def test_norm_spec_reproduces_every_norm_of_the_model(case):
    handle = _handle(case)
    adapter = handle.adapter
    generator = torch.Generator().manual_seed(0)
    norms = _norms(handle)
    assert len(norms) >= 4
    for norm in norms:
        spec = adapter.norm_spec(norm)
        x = 3.0 * torch.randn(2, 5, *spec.gamma.shape, generator=generator) + 1.5  # off-centre, so centring shows
        with torch.inference_mode():
            assert _worst(spec.apply(x), norm(x)) < TOLERANCE, type(norm).__name__
        assert (spec.bias is None) == (getattr(norm, "bias", None) is None)
    torch.testing.assert_close(adapter.norm_weight(handle.model), adapter.norm_gamma(adapter.final_norm(handle.model)))


def test_gemma_norms_store_gamma_minus_one_and_torch_norms_do_not():
    gemma, gpt2 = _handle("gemma2"), _handle("gpt2")
    final = gemma.adapter.final_norm(gemma.model)
    torch.testing.assert_close(gemma.adapter.norm_gamma(final), final.weight.detach() + 1.0)
    ln_f = gpt2.adapter.final_norm(gpt2.model)
    assert gpt2.adapter.norm_spec(ln_f).kind == "layernorm" and gemma.adapter.norm_spec(final).kind == "rmsnorm"
    torch.testing.assert_close(gpt2.adapter.norm_gamma(ln_f), ln_f.weight.detach())
    cohere = _handle("cohere")
    spec = cohere.adapter.norm_spec(cohere.adapter.final_norm(cohere.model))
    assert spec.kind == "layernorm" and spec.bias is None and spec.eps == cohere.model.config.layer_norm_eps


def test_architectures_table_covers_every_verified_case():
    from transformers import CONFIG_MAPPING

    assert len(ARCHITECTURES) >= 22
    assert set(ARCHITECTURES) == {case.split("/")[0] for case in CASES}
    assert all(model_type in CONFIG_MAPPING for model_type in ARCHITECTURES if model_type != "tinylm")
    assert len({a.family for a in ADAPTERS}) == len(ADAPTERS)
    assert ARCHITECTURES["granite"].quirks() == (
        "embeddings × config.embedding_multiplier", "branches × config.residual_multiplier",
        "logits × config.logits_scaling^-1",
    )


def test_unsupported_architecture_names_exactly_the_parts_no_entry_finds():
    from transformers import AutoModelForCausalLM, OPTConfig

    model = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=50, hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                                                       num_attention_heads=4, word_embed_proj_dim=32))
    assert missing(model) == ["layers", "final_norm", "attention", "attn_out_proj", "mlp"]
    with pytest.raises(UserError, match=r"'opt' .*not supported.*final_norm \(final norm\)") as error:
        adapter_for(model)
    assert "\n" not in str(error.value)


def test_declared_architecture_missing_a_part_says_which():
    model, _ = tiny.model("llama")
    del model.model.layers[0].self_attn.o_proj
    with pytest.raises(UserError, match=r"'llama' .*has no attn_out_proj \("):
        adapter_for(model)
