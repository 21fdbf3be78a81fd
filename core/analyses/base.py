"""The analysis protocol every package under ``core/analyses/`` follows.

An analysis is a package ``core/analyses/<name>/`` with

- ``analysis.py``: ``Settings`` (a dataclass whose ``validate()`` raises ``UserError`` naming what to
  fix), ``run(handle, settings, progress=None) -> Result`` and ``Result``, whose ``to_json()`` is the
  CLI contract and whose ``frames()`` gives the tables pages and downloads use (name -> DataFrame);
- ``charts.py``: Altair chart builders taking a ``Result`` or its frames (no Streamlit);
- ``command.py``: the ``python -m core <name>`` subcommand (``NAME``, ``HELP``, ``add_arguments``,
  ``run(args) -> dict``; optional ``ALIASES``), found by ``core/cli.py``;
- ``__init__.py`` re-exporting ``Settings``, ``run`` and ``Result``.

A page is ``pages/<name>.py``: widgets build the ``Settings``, one ``run`` call (through
``ui.results.run_analysis``), charts of the ``Result``. A bench script ``bench/<name>.py`` calls the
same public ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import core.interventions  # noqa: F401 (registers the local backend: every analysis reaches the model through it)
from core.models.handle import ModelHandle
from core.progress import Progress

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Settings:
    """Base of every analysis's settings: frozen (hashable, so pages can tell when results are stale)."""

    def validate(self) -> None:
        """Raise ``UserError`` naming the field to fix; the default accepts everything."""


@runtime_checkable
class Result(Protocol):
    def to_json(self) -> dict:
        """The CLI contract: plain JSON types only."""

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables pages show and offer as CSV, by name."""


class Run(Protocol):
    def __call__(self, handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result: ...


def checked_run(run: Run, handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    """Validate the settings, then run: what the CLI and pages call."""
    settings.validate()
    return run(handle, settings, progress)
