"""Translation latent language (Wendler et al. 2024): which language the middle layers decode to while translating."""

from core.analyses.translation.analysis import LENS_ADVICE, Result, Settings, run

__all__ = ["LENS_ADVICE", "Result", "Settings", "run"]
