"""Journey of information: what each layer keeps of the tokens, how compressed it is, and where meaning
stops depending on the language."""

from core.analyses.information.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
