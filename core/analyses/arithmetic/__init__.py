"""Numerals and arithmetic: greedy accuracy per numeral system and the layer profile of the answer."""

from core.analyses.arithmetic.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
