"""Models dispatched by accelerate with layers offloaded to disk (and, with 2 GPUs, spread over them): the lens,
exact ablation and attribution give the plain model's numbers."""

import core  # noqa: F401  (before torch: OMP settings)
import pytest
import torch

from core import interventions as iv
from core.analyses import sequences as sq
from core.models import wrap_model
from tests import tiny
from tests.analyses.sequences.tiny_prompts import prepared

accelerate = pytest.importorskip("accelerate")


def dispatched(device_map, folder):
    model, tok = tiny.model("llama")
    model = accelerate.dispatch_model(model, device_map=device_map, offload_dir=str(folder))
    return wrap_model(model, tok, "tiny-llama-offloaded")


def assert_same_numbers(plain, other):
    batch = plain.encode(["one two three four", "Monday Tuesday"])
    lens_plain = plain.decode(plain.residuals(batch)).softmax(-1)
    lens_other = other.decode(other.residuals(batch)).softmax(-1).to(lens_plain.device)
    assert torch.allclose(lens_plain, lens_other, atol=1e-5)
    prep_plain, prep_other = prepared(plain), prepared(other)
    components = iv.heads(plain) + iv.mlps(plain)
    exact_plain = sq.exact_sweep(plain, prep_plain, components, "mean")
    exact_other = sq.exact_sweep(other, prep_other, components, "mean")
    assert exact_other.full_logit_diff == pytest.approx(exact_plain.full_logit_diff, abs=1e-4)
    assert exact_other.heads["logit_diff"].to_numpy() == pytest.approx(exact_plain.heads["logit_diff"].to_numpy(), abs=1e-4)
    estimate_plain = sq.attribution_sweep(plain, prep_plain, "mean")
    estimate_other = sq.attribution_sweep(other, prep_other, "mean")
    assert estimate_other.heads["change"].to_numpy() == pytest.approx(estimate_plain.heads["change"].to_numpy(), abs=1e-4)
    assert estimate_other.mlps["change"].to_numpy() == pytest.approx(estimate_plain.mlps["change"].to_numpy(), abs=1e-4)


def test_layers_offloaded_to_disk_give_the_plain_models_numbers(tmp_path):
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    other = dispatched(device_map, tmp_path)
    assert hasattr(other.adapter.layers(other.model)[1], "_hf_hook")  # really offloaded: weights load at each call
    assert_same_numbers(tiny.handle("llama"), other)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_a_model_spread_over_two_gpus_gives_the_plain_models_numbers(tmp_path):
    device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.layers.2": "cpu",
                  "model.norm": 1, "model.rotary_emb": 0, "lm_head": 1}
    assert_same_numbers(tiny.handle("llama"), dispatched(device_map, tmp_path))
