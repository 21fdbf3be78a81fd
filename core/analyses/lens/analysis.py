"""The Logit lens analysis: one prompt, every layer × position decoded (the engine is ``core.lens``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.analyses.base import Settings as BaseSettings
from core.errors import UserError
from core.lens import LensResult, run_lens
from core.lenses import LENS_NAMES, lens_for
from core.tokens import single_token, token_str
from core.models.handle import ModelHandle
from core.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

MAX_TOP_K = 1000
MAX_TRACKED = 8
RESOLUTIONS = ("layer", "sublayer")


def tracked_token(tokenizer, text: str, vocab_size: int) -> tuple[int, str | None]:
    """(id, note): the one token ``text`` names (" Paris", "Paris", #1234); a word of several tokens is
    followed by its first token, and the note says so. Text the vocabulary does not hold is a UserError."""
    try:
        return single_token(tokenizer, text, vocab_size, what="tracked token"), None
    except UserError as err:
        if " tokens (" not in str(err):
            raise
    ids = [i for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    first = ids[0] if ids else None
    if first is None:
        raise UserError(f"the tracked token '{text}' is not in the vocabulary: give a token the model knows")
    return int(first), f"'{text}' is {len(ids)} tokens: its first, '{token_str(tokenizer, first)}', is tracked"


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``prompt``; ``top_k`` tokens per layer; ``position`` (-1 = last) is the one the JSON reports;
    ``all_positions`` decodes every position (the page's heatmap), else only ``position`` (the CLI)."""

    prompt: str = "The Eiffel Tower is in the city of"
    top_k: int = 10
    position: int = -1
    all_positions: bool = True
    lens: str = "logit"  # "logit" | "tuned"
    lens_path: str | None = None  # a tuned lens folder (default: this model's trained one)
    track: tuple[str, ...] = ()  # tokens or words whose probability and rank are followed at every row
    resolution: str = "layer"  # "layer" (L+1 rows) | "sublayer" (2L+1 rows: after each attention and MLP)

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UserError("the prompt is empty: type some text to look at")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise UserError(f"top-k must be between 1 and {MAX_TOP_K}, got {self.top_k}")
        if self.lens not in LENS_NAMES:
            raise UserError(f"unknown lens '{self.lens}': choose one of {', '.join(LENS_NAMES)}")
        if self.lens_path and self.lens != "tuned":
            raise UserError("a lens path goes with the tuned lens (--lens tuned)")
        if self.resolution not in RESOLUTIONS:
            raise UserError(f"unknown resolution '{self.resolution}': choose layer or sublayer")
        if self.resolution == "sublayer" and self.lens == "tuned":
            raise UserError("the tuned lens reads whole layers only: use --resolution layer, or the logit lens")
        if len(self.track) > MAX_TRACKED:
            raise UserError(f"track at most {MAX_TRACKED} tokens at once, got {len(self.track)}")


@dataclass
class Result:
    """The lens of every position of one prompt (``lens``: axes [layer, prompt=1, position, …])."""

    model: str
    n_layers: int
    settings: Settings
    lens: LensResult
    tracked_ids: list[int]
    notes: list[str]

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
        out = {
            "model": self.model,
            "n_layers": self.n_layers,
            "tokens": self.tokens,
            "position": self.position,
            "layers": self.lens.layers_json(slot=self.slot),
            "lens": self.lens.lens,
        }
        if self.settings.track:
            out["tracked"] = self.lens.tracked_json(self.settings.track, slot=self.slot)
        return out

    def frames(self) -> dict[str, pd.DataFrame]:
        """``lens``: one row per (row, position, rank), see ``LensResult.frame``; ``tracked``: one row per
        (tracked token, row, position) with columns token, id, row, layer, site, position, prob, rank."""
        frames = {"lens": self.lens.frame()}
        if self.settings.track:
            rows = []
            for t, name in enumerate(self.settings.track):
                for row in self.lens.layers:
                    for slot, position in enumerate(self.lens.positions[0]):
                        rows.append((name, self.tracked_ids[t], row, self.lens.layer_of(row),
                                     self.lens.sites[row][1] if self.lens.sites else "block", position,
                                     float(self.lens.target_probs[row, 0, slot, t]),
                                     int(self.lens.target_ranks[row, 0, slot, t])))
            import pandas as pd  # here, not at start-up: pandas costs a CLI run ~0.4 s

            frames["tracked"] = pd.DataFrame(rows, columns=["token", "id", "row", "layer", "site", "position", "prob", "rank"])
        return frames


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    reader = lens_for(handle, settings.lens, settings.lens_path)
    tracked = [tracked_token(handle.tokenizer, text, handle.vocab_size) for text in settings.track]
    ids = [i for i, _ in tracked]
    positions = "all" if settings.all_positions else [settings.position]
    lens = run_lens(handle, settings.prompt, positions=positions, top_k=settings.top_k, progress=progress,
                    targets=[ids] if ids else None, lens=reader, sublayer=settings.resolution == "sublayer")
    length = len(lens.tokens[0])
    if not -length <= settings.position < length:  # positions="all" does not check it
        raise UserError(f"position {settings.position} is outside the prompt ({length} tokens: use 0..{length - 1} or -1)")
    return Result(handle.spec, handle.n_layers, settings, lens, ids, [note for _, note in tracked if note])
