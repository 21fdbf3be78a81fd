"""Tuned lens: train (or reuse) per-layer affine translators and compare their KL to the logit lens's."""

from core.analyses.tuned_lens.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
