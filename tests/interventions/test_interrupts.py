"""Stopping a run between two modules of a forward (the server's Cancel): only the interruptible thread stops,
the model is left exactly as it was (no hook left behind), and nothing is registered once the block ends."""

import threading

import pytest
import torch

from core.interventions.interrupts import interruptible
from core.models.sites import Edit, Site
from tests import tiny


class Stop(Exception):
    pass


def _global_pre_hooks() -> int:
    return len(torch.nn.modules.module._global_forward_pre_hooks)


def test_a_check_stops_a_forward_between_modules_and_leaves_the_model_clean():
    handle = tiny.handle("llama")
    batch = handle.encode(["one two three four", "five six"])
    clean = handle.logits(batch)
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 7:  # partway through the first pass, inside an edited run's hooks
            raise Stop

    before = _global_pre_hooks()
    with pytest.raises(Stop), interruptible(check):
        handle.run_with_edits(batch, [Edit(Site("resid_post", 1), "scale", 0.0)])
    assert len(calls) == 7 and _global_pre_hooks() == before
    assert torch.equal(handle.logits(batch), clean)  # the edit's hooks went with the interrupted pass


def test_other_threads_and_later_runs_are_not_checked():
    handle = tiny.handle("llama")
    batch = handle.encode(["one two three"])
    seen = {"main": 0, "other": 0}
    with interruptible(lambda: seen.__setitem__("main", seen["main"] + 1)):
        other = threading.Thread(target=lambda: seen.__setitem__("other", handle.logits(batch).shape[0]))
        other.start()
        other.join()
        handle.logits(batch)
    after = seen["main"]
    handle.logits(batch)
    assert after > handle.n_layers and seen["main"] == after and seen["other"] == 1
