"""Logit lens: what each layer predicts at every position of one prompt."""

from core.analyses.lens.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
