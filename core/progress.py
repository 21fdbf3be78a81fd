"""Progress reporting, defined once: a callable ``progress(fraction, message)`` and its sub-ranges.

Every long-running ``core`` call takes ``progress: Progress | None``. Pages pass one that moves a
Streamlit progress bar, the CLI one that prints to stderr, tests none.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

Progress = Callable[[float, str], None]


def quiet(fraction: float, message: str) -> None:
    """A progress callback that shows nothing."""


def part(progress: Optional[Progress], lo: float, hi: float) -> Progress:
    """A callback mapping [0, 1] onto [lo, hi] of ``progress`` (a stage of a longer run)."""
    if progress is None:
        return quiet
    return lambda fraction, message: progress(lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0), message)


def stderr_printer(enabled: bool = True) -> Progress:
    """The CLI's progress: ``[ 42%] message`` lines on stderr (nothing when disabled, e.g. under --json)."""
    if not enabled:
        return quiet

    def show(fraction: float, message: str) -> None:
        print(f"[{min(max(fraction, 0.0), 1.0):4.0%}] {message}", file=sys.stderr, flush=True)

    return show
