"""Key–value lookup: in-context pairs and stored facts, from behaviour to the heads, layers and neurons that do it."""

from core.analyses.lookup.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
