"""Tuned-lens training as a server job: it outlives the visitor who started it, and every session asking
for the same model's lens waits on the same job and sees its progress (like model loads)."""

from __future__ import annotations

from core.analyses.tuned_lens import Settings, run
from core.models.jobs import LoadJob, ModelLoads

TRAININGS = ModelLoads(max_models=8)  # one per server process, keyed by the model


def tuned_lens_job(handle, key: str, start: bool) -> LoadJob | None:
    """The running or finished training for this model; a new one only when ``start``."""
    running = next((j for j in TRAININGS.running() if j.key == key), None)
    if running is not None or not start:
        return running
    return TRAININGS.request(key, lambda progress: run(handle, Settings(), progress))[0]
