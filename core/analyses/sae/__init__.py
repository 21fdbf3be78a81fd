"""Train a sparse dictionary (SAE or transcoder) on the loaded model, and score it on held-out text."""

from core.analyses.sae.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
