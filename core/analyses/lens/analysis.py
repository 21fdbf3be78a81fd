"""The Logit lens analysis: one prompt, every layer × position decoded (the engine is ``core.lens``)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.analyses.base import Settings as BaseSettings
from core.errors import UserError
from core.lens import LensResult, run_lens
from core.models.handle import ModelHandle
from core.progress import Progress

MAX_TOP_K = 1000


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``prompt``; ``top_k`` tokens per layer; ``position`` (-1 = last) is the one the JSON reports;
    ``all_positions`` decodes every position (the page's heatmap), else only ``position`` (the CLI)."""

    prompt: str = "The Eiffel Tower is in the city of"
    top_k: int = 10
    position: int = -1
    all_positions: bool = True

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UserError("the prompt is empty: type some text to look at")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise UserError(f"top-k must be between 1 and {MAX_TOP_K}, got {self.top_k}")


@dataclass
class Result:
    """The lens of every position of one prompt (``lens``: axes [layer, prompt=1, position, …])."""

    model: str
    n_layers: int
    settings: Settings
    lens: LensResult

    @property
    def tokens(self) -> list[str]:
        return self.lens.tokens[0]

    @property
    def position(self) -> int:
        """The 0-based position ``settings.position`` names."""
        return self.settings.position % len(self.tokens)

    @property
    def slot(self) -> int:
        """Where ``position`` sits among the decoded positions."""
        return self.lens.positions[0].index(self.position)

    def to_json(self) -> dict:
        """The ``python -m core lens`` contract."""
        return {
            "model": self.model,
            "n_layers": self.n_layers,
            "tokens": self.tokens,
            "position": self.position,
            "layers": self.lens.layers_json(slot=self.slot),
        }

    def frames(self) -> dict[str, pd.DataFrame]:
        """``lens``: one row per (layer, position, rank); see ``LensResult.frame``."""
        return {"lens": self.lens.frame()}


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    positions = "all" if settings.all_positions else [settings.position]
    lens = run_lens(handle, settings.prompt, positions=positions, top_k=settings.top_k, progress=progress)
    length = len(lens.tokens[0])
    if not -length <= settings.position < length:  # positions="all" does not check it
        raise UserError(f"position {settings.position} is outside the prompt ({length} tokens: use 0..{length - 1} or -1)")
    return Result(handle.spec, handle.n_layers, settings, lens)
