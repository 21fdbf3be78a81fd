"""Direct logit attribution on tiny random models of every family: the parts add up to the model's logit."""

from functools import lru_cache

import pytest
import torch

from core.analyses.attribute import Settings, run
from core.analyses.attribute.charts import heads_heatmap, layer_bars, layer_bars_frame
from core.analyses.attribute.decompose import decompose, head_outputs
from core.interventions.hooks import run_body
from core.models.norms import freeze_norm
from core.models.weights import linear_matrix
from core.errors import UserError
from tests import tiny

PROMPT = "The capital of France is"


@lru_cache(maxsize=None)
def _handle(family):
    """One tiny model per family for the module (tests must not change its weights)."""
    return _fresh(family)


def _fresh(family):
    """A tiny model whose norm scales and biases are random (at init they are 1 and 0, which would hide a
    wrong γ or a forgotten bias); GPT-2's unembedding gets a bias, which no tiny family has otherwise."""
    handle = tiny.handle(family, style="gpt2" if family == "gpt2" else "llama")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in handle.model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        if family == "gpt2":
            unembed = handle.adapter.unembed(handle.model)
            unembed.bias = torch.nn.Parameter(torch.randn(unembed.out_features, generator=generator))
    return handle


def _final_residual(handle, prompt, position):
    batch = handle.encode([prompt])
    return handle.residuals(batch)[-1, 0, position]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_contributions_sum_to_the_pre_cap_logit_the_model_computes(family):
    handle = _handle(family)
    for position in (-1, 2):
        result = run(handle, Settings(prompt=PROMPT, target=" capital", position=position))
        values = [c.value for c in result.components]
        assert abs(sum(values) - result.total) <= 1e-4
        assert sum(abs(v) for v in values) > 1.0  # the parts are not trivially zero
        logits = handle.decode(_final_residual(handle, PROMPT, position))  # after the soft cap
        cap = result.softcap
        assert (cap is not None) == (family in ("gemma2", "gemma3"))
        capped = cap * torch.tanh(torch.tensor(result.total) / cap) if cap else torch.tensor(result.total)
        assert float(capped) == pytest.approx(float(logits[result.target_id]), abs=1e-5)
        model_logits = handle.logits(handle.encode([PROMPT]))[0, position]
        assert float(capped) == pytest.approx(float(model_logits[result.target_id]), abs=1e-4)

    versus = run(handle, Settings(prompt=PROMPT, target=" capital", versus=" is"))
    alone = run(handle, Settings(prompt=PROMPT, target=" is"))
    target = run(handle, Settings(prompt=PROMPT, target=" capital"))
    assert versus.total == pytest.approx(target.total - alone.total, abs=1e-5)
    assert abs(sum(c.value for c in versus.components) - versus.total) <= 1e-4
    for both, one, other in zip(versus.components, target.components, alone.components):
        assert both.name == one.name == other.name
        assert both.value == pytest.approx(one.value - other.value, abs=1e-6)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_heads_sum_to_what_their_layer_attention_added(family):
    """Each layer's heads (and its output bias) add up to the attention branch output the model added."""
    handle = _handle(family)
    batch = handle.encode([PROMPT])
    parts = decompose(handle, batch, 3)
    layers = torch.tensor([-1 if layer is None else layer for layer in parts.layers])
    kinds = parts.kinds
    for layer in range(handle.n_layers):
        attention = [i for i, k in enumerate(kinds) if layers[i] == layer and k in ("head", "bias")]
        assert len(attention) == handle.n_heads + (family in ("gpt2", "gpt_neox"))  # their out-projections have a bias
        added = parts.vectors[attention].sum(0)
        assert torch.allclose(added, parts.attn_branches[layer], atol=1e-5, rtol=1e-5)
    assert parts.gap.abs().max() < 1e-5 * parts.final.abs().max()


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_zeroing_one_head_removes_exactly_its_part(family):
    """Zeroing head 2's slice of layer 1's output-projection input changes that projection's output by the
    head's part (read through the post-norm frozen at its clean scale): the heads are sliced as the model does."""
    handle, layer, head, position = _handle(family), 1, 2, 3
    batch = handle.encode([PROMPT])
    parts = decompose(handle, batch, position)
    block = handle.adapter.layers(handle.model)[layer]
    proj = handle.adapter.attn_out_proj(block)
    width = handle.head_dim
    outputs = []

    def zero_head(module, args):
        z = args[0].clone()
        z[0, position, head * width:(head + 1) * width] = 0
        return (z,)

    def keep(module, args, output):
        outputs.append(output[0, position].double())

    for ablate in (False, True):
        hooks = [proj.register_forward_hook(keep)] + ([proj.register_forward_pre_hook(zero_head)] if ablate else [])
        try:
            with torch.inference_mode():
                run_body(handle, batch)
        finally:
            for hook in hooks:
                hook.remove()
    clean, ablated = outputs
    branch = handle.adapter.attn_branch(block)
    removed = clean - ablated
    if branch is not handle.adapter.attention(block):  # Gemma 2/3: the post-norm, frozen
        removed = freeze_norm(handle.adapter, branch, clean).linear(removed)
    part = parts.vectors[parts.names.index(f"L{layer}H{head}")]
    assert part.abs().max() > 1e-2
    assert torch.allclose(removed, part, atol=1e-5)


def test_heads_of_a_projection_without_a_float_weight_come_from_running_it():
    """Quantized projections (bitsandbytes packs the weight) are read by running the module: W = proj(I) − proj(0)."""
    handle = _handle("gpt_neox")  # its output projection has a bias
    dense = handle.adapter.attn_out_proj(handle.adapter.layers(handle.model)[0])

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.in_features = dense.in_features
            self.weight = torch.zeros(3, dtype=torch.uint8)  # not a float matrix, as Linear4bit's Params4bit
            self.bias = dense.bias

        def forward(self, x):
            return dense(x)

    z = torch.randn(dense.in_features, generator=torch.Generator().manual_seed(0))
    n_heads = handle.n_heads
    w_o = linear_matrix(dense).T.reshape(n_heads, -1, handle.d_model)
    exact = head_outputs(w_o, z.reshape(n_heads, -1))
    assert exact.shape == (handle.n_heads, handle.d_model) and dense.bias.abs().max() > 0
    probed = linear_matrix(Packed()).T.reshape(n_heads, -1, handle.d_model)
    assert torch.allclose(head_outputs(probed, z.reshape(n_heads, -1)), exact, atol=1e-5)
    assert torch.allclose(exact.sum(0), (dense(z) - dense.bias).double(), atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_frozen_norm_is_the_norm_at_its_clean_input(family):
    handle = _fresh(family)  # its final norm gets random weights here
    norm = handle.adapter.final_norm(handle.model)
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(0))
        x = torch.randn(handle.d_model, generator=torch.Generator().manual_seed(1)) * 3
        assert torch.allclose(freeze_norm(handle.adapter, norm, x)(x), norm(x).double(), atol=1e-5)


def test_bad_requests_are_one_line_user_errors():
    handle = _handle("llama")
    cases = [
        (Settings(prompt="   "), "prompt is empty"),
        (Settings(prompt=PROMPT, target=""), "target token is empty"),
        (Settings(prompt=PROMPT, target=" capital", position=12), "outside the prompt"),
        (Settings(prompt=PROMPT, target=" Paris"), "2 tokens ('Pa', 'ris')"),
        (Settings(prompt=PROMPT, target="#99999"), "outside the vocabulary"),
        (Settings(prompt=PROMPT, target=" capital", versus="capital"), "same token"),
        (Settings(prompt=PROMPT, target=" capital", versus="from a shell \udcff"), "not valid Unicode"),
    ]
    for settings, message in cases:
        with pytest.raises(UserError) as err:
            run(handle, settings)
        assert message in str(err.value) and "\n" not in str(err.value)
    unknown = tiny.handle("llama", style="sentencepiece")
    with pytest.raises(UserError, match="not in the vocabulary"):
        run(unknown, Settings(prompt=PROMPT, target="花"))
    assert run(handle, Settings(prompt=PROMPT, target="#358")).target_id == 358


def test_frames_and_charts_agree_with_the_components():
    handle = _handle("gpt2")
    result = run(handle, Settings(prompt=PROMPT, target=" capital", versus=" is"))
    frames = result.frames()
    components, grid, per_layer = frames["components"], frames["heads"], frames["layers"]
    assert list(components.columns) == ["name", "kind", "layer", "head", "value"]
    assert set(components["kind"]) == {"embed", "head", "mlp", "bias"}
    assert grid.shape == (handle.n_layers, 1 + handle.n_heads)
    head = result.components[[c.name for c in result.components].index("L2H1")]
    assert grid.loc[grid["layer"] == 2, 1].item() == head.value
    assert per_layer["attention"].sum() == pytest.approx(components.loc[components["kind"] == "head", "value"].sum())
    bars = layer_bars_frame(result)
    assert bars["value"].sum() == pytest.approx(result.total, abs=1e-4)  # the bars account for every part
    assert list(bars["column"].unique()) == ["embed", "0", "1", "2", "bias"]
    heat = heads_heatmap(result).to_dict()
    assert heat["encoding"]["color"]["scale"]["domainMid"] == 0
    lo, hi = heat["encoding"]["color"]["scale"]["domain"]
    assert lo == -hi and hi == pytest.approx(max(abs(c.value) for c in result.components if c.kind == "head"))
    assert layer_bars(result).to_dict()["mark"]["type"] == "bar"
