"""Several users at once: one model per server, forward passes serialized by ``handle.lock``,
no result of one session in another, a model switch in one session leaves another's running
analysis alone, and out-of-memory during an analysis is a message, not a dead app.

Logic on tiny models in threads; the app itself as four AppTest sessions in threads on the real
default model (Streamlit runs each browser session's script in its own thread the same way).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.lens import run_lens
from core.tokens import visible
from tests import tiny
from tests.apptest import private_home  # noqa: F401 (each test its own result store)

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "1 2 3 4 5 6 7 8 9 10 11 12",
    "one two",
    "Monday Tuesday Wednesday Thursday Friday",
]


def in_threads(jobs) -> list:
    """Run callables at once, one thread each; re-raise the first failure; return their results.

    AppTest runs each script under its own patch of Streamlit's config (``global.appTest``); concurrent runs
    undo each other's patches, and a run then stops recording its widgets' format functions (a KeyError
    reading a selectbox). One patch around all the threads keeps the option set for every run.

    A server compiles each page once, in its one ``ScriptCache`` under that cache's lock; every AppTest run
    builds a cache of its own, so four runs would compile at once, and CPython 3.11 keeps the AST converter's
    recursion depth in one global counter (``SystemError: AST constructor recursion depth mismatch`` when two
    threads parse together; fixed in 3.12). One lock around every cache's compile does what the server does."""
    from unittest import mock

    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1.util import patch_config_options

    compile_lock = threading.Lock()
    get_bytecode = ScriptCache.get_bytecode

    def one_compile_at_a_time(self, script_path):
        with compile_lock:
            return get_bytecode(self, script_path)

    with patch_config_options({"global.appTest": True}), \
            mock.patch.object(ScriptCache, "get_bytecode", one_compile_at_a_time):
        return _in_threads(jobs)


def _in_threads(jobs) -> list:
    results, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def run(i, job):
        try:
            start.wait()
            results[i] = job()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def resident_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of this process in MB. The weights of a converted folder are
    mapped from its safetensors file (file-backed); what the sessions compute with is anonymous. Where the
    platform gives no split, everything counts as anonymous."""
    import psutil

    info = psutil.Process().memory_info()
    shared = getattr(info, "shared", 0)
    return (info.rss - shared) / 2**20, shared / 2**20


# -- the core, from several threads ------------------------------------------------------------------


def test_lens_in_four_threads_equals_the_lens_run_alone():
    """Hooks are global to a shared model: each thread must capture its own forward pass, never another's."""
    handle = tiny.handle("llama")
    alone = [run_lens(handle, p, positions="all", top_k=3) for p in PROMPTS]

    def repeat(i):
        return [run_lens(handle, PROMPTS[i], positions="all", top_k=3) for _ in range(6)]

    for i, runs in enumerate(in_threads([lambda i=i: repeat(i) for i in range(4)])):
        for result in runs:
            assert result.tokens == alone[i].tokens
            np.testing.assert_array_equal(result.top_ids, alone[i].top_ids)
            np.testing.assert_allclose(result.top_probs, alone[i].top_probs, rtol=1e-5, atol=1e-7)


def test_forward_passes_never_overlap():
    """Lens, logits, capture and record from four threads: at most one forward pass is inside the model."""
    handle = tiny.handle("llama", seed=1)
    layers = handle.adapter.layers(handle.model)
    inside, most, count = [0], [0], threading.Lock()

    def enter(module, args):
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.002)  # widen the window in which an unserialized pass would overlap

    def leave(module, args, output):
        with count:
            inside[0] -= 1

    hooks = [layers[0].register_forward_pre_hook(enter), layers[-1].register_forward_hook(leave)]
    try:
        same_length = handle.encode(["one two three", "four five six"])
        assert len(set(same_length.lengths)) == 1
        jobs = [
            lambda: [run_lens(handle, PROMPTS[0], positions="all") for _ in range(8)],
            lambda: [handle.logits(handle.encode(PROMPTS[1:3])) for _ in range(8)],
            lambda: [handle.capture(same_length) for _ in range(8)],
            lambda: [handle.record_run(same_length) for _ in range(8)],
        ]
        in_threads(jobs)
    finally:
        for h in hooks:
            h.remove()
    assert inside[0] == 0
    assert most[0] == 1


# -- the app: four sessions at once ------------------------------------------------------------------


def lens_table(at) -> "np.ndarray":
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at.dataframe[0].value


def run_prompt(at, prompt: str):
    at.text_area[0].input(prompt)
    at.button[0].click().run()  # the lens form's submit button
    return at


@pytest.fixture
def fresh_model_cache():
    """The app's model cache emptied, so the sessions below race to load the model themselves."""
    import ui.model

    ui.model._load.clear()
    yield
    ui.model._load.clear()


def test_four_sessions_at_once_share_one_model_and_keep_their_results(gemma, fresh_model_cache, monkeypatch):
    import ui.model

    loads = []
    real_load_model = ui.model.load_model

    def counting_load_model(*args, **kwargs):
        loads.append(args[0])
        return real_load_model(*args, **kwargs)

    monkeypatch.setattr(ui.model, "load_model", counting_load_model)
    prompts = [f"The weather in {city} today is" for city in ("Berlin", "Tokyo", "Madrid", "Cairo")]
    expected = [visible(run_lens(gemma, p, top_k=1).top_tokens[-1][0][0][0]) for p in prompts]
    sessions = [AppTest.from_file(APP, default_timeout=600) for _ in prompts]
    before = resident_mb()
    in_threads([lambda at=at: at.run() for at in sessions])  # four first visits: one model load
    in_threads([lambda at=at, p=p: run_prompt(at, p) for at, p in zip(sessions, prompts)])
    after = resident_mb()
    assert loads == ["gemma-3-270m"]
    for at, prompt, top in zip(sessions, prompts, expected):
        table = lens_table(at)
        assert len(table) == gemma.n_layers + 1
        assert table.iloc[0]["#1"] == top  # the output layer's top-1 for this session's own prompt
        city = prompt.split()[3]
        assert any(city in str(o) for o in at.select_slider[0].options), "another session's tokens on this page"
    model_mb = gemma.memory_bytes / 2**20
    anon_mb, mapped_mb = after[0] - before[0], after[1] - before[1]
    print(f"\nresident memory +{anon_mb:.0f} MB anonymous, +{mapped_mb:.0f} MB mapped from files, for four sessions "
          f"and one load of a {model_mb:.0f} MB model")
    # One load maps the weights once (1.04 models, the same in every run): a second load of the folder maps
    # them again. The sessions' own work (lens buffers, an allocator arena per thread) took 0.74-1.41 models of
    # anonymous memory in eleven runs (RSS as a whole, 1.8-2.3 models, was too noisy to bound at 2): four
    # copies of the weights in memory would add at least 4.
    assert mapped_mb < 1.5 * model_mb
    assert anon_mb < 2.5 * model_mb


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    """A tiny random Llama saved as an ordinary Hugging Face folder (loads in a second)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny.model("llama", seed=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_switching_model_in_one_session_leaves_anothers_running_analysis_alone(gemma, tiny_model_folder):
    import ui.model

    first = AppTest.from_file(APP, default_timeout=600)
    first.run()
    shared = ui.model._load("gemma-3-270m", "auto", "none", "auto", False)  # the handle of the first session
    prompt = "Paris is the capital of"
    expected = visible(run_lens(gemma, prompt, top_k=1).top_tokens[-1][0][0][0])
    running = threading.Thread(target=run_prompt, args=(first, prompt))
    with shared.lock:  # hold the model: the first session's analysis waits inside its forward pass
        running.start()
        # Another user picks another model in the sidebar (AppTest drops the app script's sidebar
        # widgets under st.navigation, so the choice is made before that session's first run).
        second = AppTest.from_file(APP, default_timeout=600)
        second.session_state["model_choice"] = ui.model.CUSTOM
        second.session_state["model_custom"] = str(tiny_model_folder)
        second.run()
        switched = lens_table(second)
        assert running.is_alive()  # the other model was loaded and used while the first analysis was under way
    running.join(timeout=600)
    assert len(switched) == 3 + 1  # the tiny model: embeddings + 3 layers
    table = lens_table(first)
    assert len(table) == gemma.n_layers + 1 and table.iloc[0]["#1"] == expected
    assert "gemma3_text" in first.sidebar.caption[0].value and "llama" in second.sidebar.caption[0].value


def test_out_of_memory_during_an_analysis_is_a_message_and_the_app_keeps_serving(gemma, monkeypatch):
    import core.analyses.lens.analysis

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 23.65 GiB total)")

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    with monkeypatch.context() as patch:
        patch.setattr(core.analyses.lens.analysis, "run_lens", exhausted)  # what the page's one core call runs
        run_prompt(at, "A prompt that needs more memory than the device has")
    assert not at.exception
    assert "ran out of memory" in at.error[0].value and "keeps serving" in at.error[0].value
    assert not at.dataframe  # no stale results from an earlier run under the message
    run_prompt(at, "The Eiffel Tower is in the city of")  # the same session, the next request
    assert len(lens_table(at)) == gemma.n_layers + 1
