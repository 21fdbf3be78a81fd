"""Dictionaries as functions (each activation rule by hand), metrics formulas, and the site/hook name mappings."""

import pytest
import torch

from core.errors import UserError
from core.features import Dictionary, batch_topk, metrics, sites
from tests.features.conftest import random_dictionary


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "batchtopk"])
def test_encode_follows_each_activation_rule(activation, inputs):
    d = random_dictionary(activation=activation)
    pre = inputs @ d.W_enc + d.b_enc
    if activation == "relu":
        expected = pre.relu()
    elif activation in ("jumprelu", "batchtopk"):  # BatchTopK at inference: a fixed threshold
        expected = torch.where(pre > d.threshold, pre, torch.zeros(())).relu()
    else:
        kth = pre.relu().topk(d.k, dim=-1).values[:, -1:]
        expected = torch.where(pre.relu() >= kth, pre.relu(), torch.zeros(()))
    acts = d.encode(inputs)
    assert torch.equal(acts, expected)
    if activation == "topk":
        assert ((acts > 0).sum(-1) <= d.k).all()
    assert torch.allclose(d(inputs), acts @ d.W_dec + d.b_dec)


def test_encode_keeps_leading_axes_and_float32(inputs):
    d = random_dictionary()
    acts = d.encode(inputs.double().reshape(10, 20, 16))
    assert acts.shape == (10, 20, 48) and acts.dtype == torch.float32
    assert torch.equal(acts.reshape(200, 48), d.encode(inputs))


def test_a_skip_transcoder_adds_its_affine_path(inputs):
    d = random_dictionary(kind="transcoder", skip=True, d_out=12, activation="jumprelu")
    acts = d.encode(inputs)
    assert torch.allclose(d(inputs), acts @ d.W_dec + d.b_dec + inputs @ d.W_skip)
    with pytest.raises(ValueError, match="x_in"):
        d.decode(acts)


def test_batch_topk_keeps_k_per_token_over_the_batch():
    pre = torch.randn(32, 100, generator=torch.Generator().manual_seed(1))
    acts = batch_topk(pre, k=4)
    assert int((acts > 0).sum()) == 4 * 32
    assert float(acts[acts > 0].min()) >= float(pre.relu().flatten().topk(4 * 32).values[-1])


@pytest.mark.parametrize("change, message", [
    (dict(W_dec=torch.zeros(47, 16)), "width mismatch: W_enc [16, 48] has 48 latents but W_dec [47, 16] has 47"),
    (dict(b_enc=torch.zeros(40)), "b_enc is [40]"),
    (dict(threshold=None, activation="jumprelu"), "needs a threshold"),
    (dict(k=None), "needs k between 1 and its width 48"),
    (dict(activation="gelu"), "unknown activation 'gelu'"),
    (dict(site="resid_mid"), "unknown site 'resid_mid'"),
    (dict(W_dec=torch.zeros(48, 8), b_dec=torch.zeros(8)), "an SAE reconstructs its input"),
])
def test_an_inconsistent_dictionary_is_one_user_error_line(change, message):
    good = random_dictionary()
    fields = {name: getattr(good, name) for name in ("W_enc", "b_enc", "W_dec", "b_dec", "k", "activation")}
    fields.update(change)
    with pytest.raises(UserError) as error:
        Dictionary(**fields)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_to_moves_and_keeps_everything(inputs):
    d = random_dictionary(activation="jumprelu", layer=3, model="m")
    moved = d.to("cpu")
    assert moved is not d and moved.layer == 3 and moved.model == "m"
    assert torch.equal(moved.encode(inputs), d.encode(inputs))


# -- metrics -----------------------------------------------------------------------------------------------

def test_fvu_is_one_for_the_mean_zero_for_exact_and_streams_exactly():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(2)) * 3 + 1
    assert metrics.fvu(x, x) == 0
    assert metrics.fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=1e-9)
    noisy = x + 0.1 * torch.randn_like(x)
    meter = metrics.FVUMeter()
    for part, part_hat in zip(x.split(77), noisy.split(77)):
        meter.update(part, part_hat)
    expected = float(((x - noisy) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert meter.value == pytest.approx(expected, rel=1e-6)
    assert metrics.fvu(x, noisy) == pytest.approx(expected, rel=1e-6)


def test_l0_dead_fraction_and_the_loss_scores():
    acts = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    assert metrics.l0(acts) == 1.5
    assert metrics.dead_fraction(acts) == 0.5
    assert metrics.dead_fraction(torch.tensor([True, False, False, False])) == 0.75
    assert metrics.delta_ce(2.0, 2.25) == 0.25
    assert metrics.loss_recovered(2.0, 2.25, 7.0) == pytest.approx(0.95)
    assert metrics.loss_recovered(2.0, 2.0, 7.0) == 1.0 and metrics.loss_recovered(2.0, 7.0, 7.0) == 0.0
    with pytest.raises(ValueError):
        metrics.loss_recovered(2.0, 2.5, 2.0)


# -- sites -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hook, place", [
    ("blocks.9.hook_resid_post", ("resid", 10)), ("blocks.9.hook_resid_pre", ("resid", 9)),
    ("hook_embed", ("resid", 0)), ("blocks.0.hook_mlp_out", ("mlp_out", 1)),
    ("blocks.4.hook_attn_out", ("attn_out", 5)),
    ("blocks.4.ln2.hook_normalized", ("mlp_in", 5)), ("blocks.4.hook_mlp_in", ("mlp_in", 5)),
    ("blocks.2.attn.hook_z", ("attn_z", 3)), ("blocks.2.hook_resid_mid", None),
])
def test_transformerlens_hooks_map_to_our_layers(hook, place):
    assert sites.from_transformerlens(hook) == place
    if place and hook not in ("blocks.9.hook_resid_pre", "hook_embed", "blocks.4.hook_mlp_in"):
        assert sites.to_transformerlens(*place) == hook


@pytest.mark.parametrize("point, place", [
    ("model.layers.12.output", ("resid", 13)), ("model.layers.5.pre_feedforward_layernorm.output", ("mlp_in", 6)),
    ("model.layers.5.post_feedforward_layernorm.output", ("mlp_out", 6)),
    ("model.layers.0.self_attn.o_proj.input", ("attn_z", 1)), ("model.embed_tokens.output", ("resid", 0)),
])
def test_gemma_scope_hook_points_map_to_our_layers(point, place):
    assert sites.from_hf_point(point) == place and sites.to_hf_point(*place) == point


def test_sparsify_hookpoints_folder_hints_and_model_names():
    assert sites.from_sparsify_hookpoint("layers.9", False) == ("resid", 10)
    assert sites.from_sparsify_hookpoint("model.layers.9.mlp", True) == ("mlp_in", 10)
    assert sites.from_sparsify_hookpoint("h.3.mlp", False) == ("mlp_out", 4)
    assert sites.from_sparsify_hookpoint("checkpoint", False) is None
    assert sites.folder_hint("resid_post/layer_12_width_16k_l0_small") == ("resid", 13)
    assert sites.folder_hint("transcoder_all/layer_5_width_16k_l0_big_affine") == ("mlp_in", 6)
    assert sites.same_model("google/gemma-3-270m-pt", "gemma-3-270m") and sites.same_model(None, "x")
    assert not sites.same_model("google/gemma-3-1b-pt", "gemma-3-270m")
