"""The nnsight backend: the lens through nnsight traces equals the local engine; NDIF brings back reductions only
and fails in one line, within seconds, when it cannot be used."""

import core  # noqa: F401  (before torch: OMP settings)
import os
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("nnsight")

from core.analyses import lens  # noqa: E402
from core.models import wrap_model  # noqa: E402
from core.backends import lens_reductions, through_nnsight  # noqa: E402
from tests import tiny  # noqa: E402

PROMPTS = ["one two three four", "Monday Tuesday", "The capital of France is"]


def local_lens(handle, prompts, k=5):
    """The local engine's lens at each prompt's last position: (top ids, top probs) [layer, batch, k].

    Top-k of the logits, as ``core.lens``: probabilities that underflow to 0 (layer 0 of Gemma) tie, logits do not."""
    batch = handle.encode(prompts)
    logits = handle.decode(handle.residuals(batch)[:, :, -1])
    probs = logits.softmax(-1)
    top = logits.topk(k, dim=-1).indices
    return top, probs.gather(-1, top), probs


def assert_same_lens(handle):
    traced = through_nnsight(handle)
    batch = handle.encode(PROMPTS)
    assert torch.allclose(traced.residuals(batch), handle.residuals(batch), atol=1e-5)
    ids, probs, full = local_lens(handle, PROMPTS)
    reduced = lens_reductions(traced, PROMPTS, 5, token_sets=[[5, 6, 7]])
    assert torch.equal(reduced.top_ids[:, :, 0], ids)
    assert torch.allclose(reduced.top_probs[:, :, 0], probs, atol=1e-4)
    assert torch.allclose(reduced.token_set_probs[..., 0], full[..., [5, 6, 7]].sum(-1), atol=1e-4)
    assert torch.allclose(reduced.kl_to_final_bits[-1], torch.zeros(len(PROMPTS), 1), atol=1e-5)
    settings = lens.Settings(prompt=PROMPTS[2], top_k=5, all_positions=False)
    here, there = lens.run(handle, settings).to_json(), lens.run(traced, settings).to_json()
    assert flat(here).keys() == flat(there).keys()
    for key, value in flat(here).items():
        assert flat(there)[key] == (pytest.approx(value, abs=1e-4) if isinstance(value, float) else value), key


def flat(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_the_lens_through_nnsight_equals_the_local_engine(family):
    style = {"gpt2": "gpt2", "gpt_neox": "gpt2"}.get(family, "llama")
    assert_same_lens(tiny.handle(family, style=style))


def test_the_lens_through_nnsight_equals_the_local_engine_on_the_default_model(gemma):
    assert_same_lens(gemma)


def test_one_request_saves_under_a_megabyte_for_a_32_layer_lens_of_16_prompts():
    from transformers import AutoModelForCausalLM

    tok = tiny.tokenizer("llama")
    config = tiny.config("llama", len(tok))
    config.num_hidden_layers = 32
    handle = through_nnsight(wrap_model(AutoModelForCausalLM.from_config(config), tok, "tiny-llama-32"))
    reduced = lens_reductions(handle, ["one two three four five six seven"] * 16, 5, token_sets=[[5, 6], [7]])
    assert reduced.top_ids.shape == (33, 16, 1, 5) and reduced.token_set_probs.shape == (33, 16, 2)
    assert reduced.saved_bytes <= 2**20
    assert reduced.saved_bytes < 33 * 16 * len(tok) * 4 / 10  # far less than the layer x vocab probabilities


def ndif_cli(**env):
    environment = {k: v for k, v in os.environ.items() if k != "NDIF_API_KEY"} | env
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", "lens", "--backend", "ndif", "--model", "meta-llama/Llama-2-7b-hf",
                           "--prompt", "hi", "--json"], capture_output=True, text=True, env=environment, timeout=60)
    return done, time.perf_counter() - started


def test_ndif_without_a_key_fails_in_one_line_with_exit_2():
    done, seconds = ndif_cli()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "NDIF_API_KEY" in done.stderr
    assert seconds < 30


def test_ndif_offline_fails_in_one_line_with_exit_2_and_never_shows_the_key():
    done, seconds = ndif_cli(NDIF_API_KEY="secret-key-123", NDIF_HOST="127.0.0.1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "cannot be reached" in done.stderr
    assert "secret-key-123" not in done.stderr
    assert seconds < 30


def _sidebar_app():
    from ui.model import sidebar

    sidebar()


@pytest.mark.parametrize("key", ["", "operator-key-456"])
def test_the_sidebar_offers_ndif_only_when_the_operator_set_a_key_and_never_shows_it(key, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NDIF_API_KEY", key)
    app = AppTest.from_function(_sidebar_app).run(timeout=60)
    assert [r.label for r in app.sidebar.radio] == (["Run on"] if key else [])
    assert not key or key not in str(app)
