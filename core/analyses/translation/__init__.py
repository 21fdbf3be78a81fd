"""Translation latent language (Wendler et al. 2024): which language the middle layers decode to while translating."""

from core.analyses.translation.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
