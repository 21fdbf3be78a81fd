"""Features: what sparse dictionaries (SAEs, transcoders) read in a prompt, layer by layer, and steering with one."""

from core.analyses.features.analysis import SHIPPED, Result, Settings, available, run
from core.analyses.features.steering import SteerResult, SteerSettings, steer

__all__ = ["SHIPPED", "Result", "Settings", "SteerResult", "SteerSettings", "available", "run", "steer"]
