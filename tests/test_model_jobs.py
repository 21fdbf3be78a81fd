"""Server-wide model loads (core.models.jobs): one load per model, outliving whoever asked first."""

import threading

import pytest

from core.errors import UserError
from core.models.jobs import ModelLoads
from tests import tiny


def test_sessions_asking_together_share_one_load_that_reports_progress():
    gate, calls = threading.Event(), []

    def load(progress):
        calls.append(1)
        progress(0.3, "converting")
        gate.wait(10)
        progress(0.2, "a stage that reports a lower fraction")  # the bar never goes back
        return tiny.handle("llama")

    loads = ModelLoads(max_models=2)
    results = []
    askers = [threading.Thread(target=lambda: results.append(loads.request("m", load))) for _ in range(4)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    jobs = {id(job) for job, _ in results}
    assert len(jobs) == 1 and sum(started for _, started in results) == 1
    job = results[0][0]
    assert not job.wait(0.2) and job.fraction == pytest.approx(0.3) and job.message == "converting"
    gate.set()  # nobody waits on it now: the load still finishes on its own
    handle = job.result()
    assert job.fraction == 1.0 and handle.n_layers == 3 and calls == [1]
    assert loads.request("m", load)[0].result() is handle and calls == [1]  # a later session reuses it


def test_a_failed_load_reaches_every_waiter_and_a_new_request_retries():
    attempts = []

    def load(progress):
        attempts.append(1)
        if len(attempts) == 1:
            raise UserError("model path not found: /nowhere")
        return tiny.handle("gpt2")

    loads = ModelLoads()
    job, _ = loads.request("m", load)
    with pytest.raises(UserError, match="not found"):
        job.result()
    retry, started = loads.request("m", load)
    assert started and retry is not job and retry.result().architecture == "gpt2"


def test_finished_models_beyond_the_limit_are_dropped_least_recent_first():
    loads = ModelLoads(max_models=2)
    for key in ("a", "b"):
        loads.request(key, lambda progress: tiny.handle("llama"))[0].result()
    loads.request("a", lambda progress: tiny.handle("llama"))  # "a" is now the most recent
    loads.request("c", lambda progress: tiny.handle("llama"))[0].result()
    assert not loads.request("a", lambda progress: tiny.handle("llama"))[1]
    assert loads.request("b", lambda progress: tiny.handle("llama"))[1]  # "b" was dropped: loaded again
