"""Translation latent language (Wendler et al. 2024): which language the middle layers decode to while translating;
with concept patching (Dumas et al. 2025) and language steering beside it."""

from core.analyses.translation.analysis import LENS_ADVICE, Result, Settings, run
from core.analyses.translation.causal import CausalResult
from core.analyses.translation.steering import SteeringResult

__all__ = ["LENS_ADVICE", "CausalResult", "Result", "Settings", "SteeringResult", "run"]
