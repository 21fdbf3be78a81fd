"""NDIF through nnsight, tested without the network hop: a reductions-only handle on a model loaded here, its
traces serialized as for NDIF and rebuilt with this project's modules hidden (nnsight's ``remote="local"``),
gives the local engine's numbers; everything NDIF cannot bring back is one line."""

import core  # noqa: F401  (before torch: OMP settings)

import numpy as np
import pytest

pytest.importorskip("nnsight")

from core import interventions as iv  # noqa: E402
from core.analyses import lens, sequences as sq, translation  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.models import wrap_model  # noqa: E402
from core.backends import lens_reductions, ndif_handle, reduced_lens, through_nnsight  # noqa: E402
from core.backends.sweep import ablation_sweep  # noqa: E402
from tests import tiny  # noqa: E402
from tests.analyses.sequences.tiny_prompts import tiny_prompts  # noqa: E402
from tests.analyses.translation.test_analysis import SMALL  # noqa: E402
from tests.models.test_backends import flat  # noqa: E402

FAMILIES = [("llama", "llama"), ("gpt2", "gpt2"), ("gemma2", "llama")]  # gemma2: soft-capped logits


def remote(handle):
    """The handle NDIF gets, on this machine: reductions only, each trace serialized and rebuilt as NDIF would."""
    return through_nnsight(handle, remote="local", reductions_only=True)


def assert_same_json(here: dict, there: dict, atol: float = 1e-4):
    here, there = flat(here), flat(there)
    assert here.keys() == there.keys()
    for key, value in here.items():
        assert there[key] == (pytest.approx(value, abs=atol) if isinstance(value, float) else value), key


@pytest.mark.parametrize("family,style", FAMILIES)
@pytest.mark.parametrize("position", [-1, 2])
def test_the_lens_on_ndif_equals_the_local_engine(family, style, position):
    handle = tiny.handle(family, style=style)
    settings = lens.Settings(prompt="The capital of France is", top_k=5, position=position, all_positions=False,
                             track=(" Paris", "one"))
    assert_same_json(lens.run(handle, settings).to_json(), lens.run(remote(handle), settings).to_json())


def test_reduced_lens_equals_run_lens_with_targets_token_sets_and_batches():
    from core.lens import run_lens

    handle = tiny.handle("gemma3")
    prompts = ["one two three four", "Monday Tuesday", "The capital of France is", "1 2 3"]
    kwargs = dict(positions=[-1, -2], top_k=3, targets=[[5, 9]] * 4, token_sets=[[{5, 6, 7}, {8}], [{9}, set()]] * 2,
                  batch_size=3)
    here, there = run_lens(handle, prompts, **kwargs), reduced_lens(remote(handle), prompts, **kwargs)
    assert there.positions == here.positions and there.tokens == here.tokens and there.top_tokens == here.top_tokens
    np.testing.assert_array_equal(there.top_ids, here.top_ids)
    np.testing.assert_array_equal(there.target_ranks, here.target_ranks)
    for name in ("top_probs", "entropy_bits", "kl_to_final_bits", "target_probs", "set_probs"):
        np.testing.assert_allclose(getattr(there, name), getattr(here, name), atol=1e-4, err_msg=name)


def test_translation_on_ndif_equals_the_local_engine_with_teacher_forced_pieces():
    handle = tiny.handle("llama")
    settings = translation.Settings(source="ta", target="hi", latent="zh", shots=2, batch_size=2, words=SMALL)
    here, there = translation.run(handle, settings), translation.run(remote(handle), settings)
    assert here.n_two_piece == 5  # the second, teacher-forced pass ran (at position -2)
    np.testing.assert_allclose(there.lang_probs, here.lang_probs, atol=1e-4)
    np.testing.assert_allclose(there.entropy_bits, here.entropy_bits, atol=1e-4)
    assert there.top_tokens == here.top_tokens
    assert_same_json(here.to_json(), there.to_json())


def test_the_ndif_handle_is_built_the_nnsight_way_and_runs_the_same_traces(tmp_path):
    model, tok = tiny.model("llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    meta = ndif_handle(str(tmp_path))  # what --backend ndif builds: config and tokenizer read, weights on meta
    assert meta.device.type == "meta" and meta.backend.remote is True and meta.reductions_only
    assert (meta.n_layers, meta.n_heads, meta.vocab_size) == (3, 4, model.lm_head.out_features)
    here = ndif_handle(str(tmp_path), remote="local", dispatch=True)  # the same handle, weights loaded here
    settings = lens.Settings(prompt="Monday Tuesday", top_k=5, all_positions=False, track=(" Wednesday",))
    assert_same_json(lens.run(wrap_model(model, tok, str(tmp_path)), settings).to_json(), lens.run(here, settings).to_json())


def test_one_lens_request_saves_under_a_megabyte_for_32_layers_and_16_prompts():
    from transformers import AutoModelForCausalLM

    tok = tiny.tokenizer("llama")
    config = tiny.config("llama", len(tok))
    config.num_hidden_layers = 32
    handle = remote(wrap_model(AutoModelForCausalLM.from_config(config), tok, "tiny-llama-32"))
    reduced = lens_reductions(handle, ["one two three four five six seven"] * 16, 10, targets=[[5, 6, 7]] * 16,
                              prompt_sets=[[{5, 6}, {7}]] * 16)
    assert reduced.top_ids.shape == (33, 16, 1, 10) and reduced.set_probs.shape == (33, 16, 1, 2)
    assert reduced.saved_bytes == 33 * 16 * (10 * 12 + 2 * 4 + 3 * 12 + 2 * 4)  # top-k ids+probs, entropy, KL, targets, sets
    assert reduced.saved_bytes <= 2**20


# -- the head sweep -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family,style", [("llama", "llama"), ("gpt2", "gpt2")])
@pytest.mark.parametrize("ablation", ["mean", "zero", "resample"])
@pytest.mark.parametrize("where", [False, "local"])
def test_the_sweep_inside_nnsight_traces_equals_the_local_exact_sweep(family, style, ablation, where):
    handle = tiny.handle(family, style=style)
    prompts, batch, corrupt = tiny_prompts(handle)
    run = handle.record_run(batch)
    values = iv.replacement(ablation, handle.capture(corrupt), len(prompts.pairs), seed=3)
    prep = sq.Prepared(prompts, batch, run, values, prompts.answer_ids())
    components = iv.heads(handle) + iv.mlps(handle)
    local = sq.exact_sweep(handle, prep, components, ablation)
    traced_handle = through_nnsight(handle, remote=where, reductions_only=bool(where))
    traced = ablation_sweep(traced_handle, batch, corrupt, prompts.answer_ids(), [[c] for c in components], ablation,
                            seed=3, max_tokens=80)  # several traces (one session when remote)
    assert traced.n_traces > 1 and traced.saved_bytes == 4 * (len(components) + traced.n_traces)
    assert traced.full == pytest.approx(local.full_logit_diff, abs=1e-4)
    expected = np.concatenate([local.heads["logit_diff"], local.mlps["logit_diff"]])
    np.testing.assert_allclose(traced.ablated, expected, atol=1e-4)
    assert np.ptp(traced.ablated) > 0.1  # the ablations changed something


def test_the_sequences_analysis_on_ndif_equals_the_local_one_on_the_default_model(gemma):
    settings = sq.Settings(n=2, method="ablation")
    here = sq.run(gemma, settings)
    there = sq.run(remote(gemma), settings)
    nnsight_here = sq.run(through_nnsight(gemma), settings)  # --backend nnsight: the same traces, full handle
    for run in (there, nnsight_here):
        assert run.sweeps.exact.n_prompts == here.sweeps.exact.n_prompts == 2
        assert flat(run.to_json()).keys() == flat(here.to_json()).keys()
        assert run.sweeps.exact.full_logit_diff == pytest.approx(here.sweeps.exact.full_logit_diff, abs=1e-4)
        for part in ("heads", "mlps"):
            np.testing.assert_allclose(getattr(run.sweeps.exact, part)["logit_diff"],
                                       getattr(here.sweeps.exact, part)["logit_diff"], atol=1e-4)


# -- what NDIF cannot bring back: one line each --------------------------------------------------------------


@pytest.mark.parametrize("what,call", [
    ("every position", lambda h: lens.run(h, lens.Settings(prompt="one two", all_positions=True))),
    ("sub-layer rows", lambda h: lens.run(h, lens.Settings(prompt="one two", all_positions=False, resolution="sublayer"))),
    ("energy", lambda h: translation.run(h, translation.Settings(source="ta", target="hi", latent="zh", shots=2,
                                                                 energy=True, words=SMALL))),
    ("residual streams", lambda h: h.residuals(h.encode(["one two"]))),
    ("hooked passes", lambda h: h.capture(h.encode(["one two"]))),
    ("gradients", lambda h: sq.run(h, sq.Settings(n=2, method="attribution"))),
])
def test_what_ndif_cannot_bring_back_is_one_line_naming_what_to_use(what, call):
    handle = remote(tiny.handle("llama"))
    with pytest.raises(UserError) as err:
        call(handle)
    message = str(err.value)
    assert "\n" not in message and ("--backend local" in message or "chosen positions" in message), (what, message)


def test_arithmetic_on_ndif_says_in_one_line_that_greedy_answers_need_another_backend():
    from core.analyses import arithmetic

    with pytest.raises(UserError, match="greedy answers.*--backend local or nnsight"):
        arithmetic.run(remote(tiny.handle("llama")), arithmetic.Settings(n=2))


# -- the CLI and the sidebar ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,says", [
    (["sequences", "--dtype", "float16"], "--dtype"),
    (["quanta"], "quanta does not run on NDIF, which brings back reduced statistics only (it runs lens, translation, "
                 "sequences): use --backend local or nnsight"),
])
def test_what_the_ndif_cli_cannot_do_fails_in_one_line_before_asking_ndif(argv, says):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NDIF_API_KEY"}  # no key: it never got as far as asking
    done = subprocess.run([sys.executable, "-m", "core", *argv, "--backend", "ndif", "--model", "meta-llama/Llama-2-7b-hf",
                           "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.strip().count("\n") == 0
    assert says in done.stderr


def _ndif_app():
    import streamlit as st

    from ui.model import current_model, sidebar

    sidebar()
    if st.session_state.get("model_run_on") == "NDIF":  # "this machine" would load the default model here
        current_model()
        st.write("loaded")


def test_the_sidebar_sends_the_ndif_choice_to_the_loader_and_shows_its_error_in_one_line(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NDIF_API_KEY", "operator-key-789")
    monkeypatch.setenv("NDIF_HOST", "127.0.0.1")  # nothing listens on its port 443: refused at once
    app = AppTest.from_function(_ndif_app).run(timeout=60)
    app.sidebar.radio(key="model_run_on").set_value("NDIF").run(timeout=60)
    assert not app.exception
    assert [e.value for e in app.error] == [
        "Could not load the model: NDIF cannot be reached from this machine (offline or blocked): use --backend "
        "local or nnsight"]
    assert "loaded" not in [m.value for m in app.markdown] and "operator-key-789" not in str(app)
