"""Language steering: is there a direction in the residual stream that says which language the answer is in?

At each lens row ℓ, the direction is the mean residual at the last position of translation prompts whose answers
are in language X minus the mean over prompts whose answers are in language Y (both translating the same concepts
from ``source``, so the concepts cancel). Added with strength α at the last position of held-out prompts whose
answers are in Y (other concepts), it should move the answer into X, if such a direction exists at ℓ: we read
p(the concept in X), in Y and in English at the output. α = 1 moves the mean of the Y prompts onto the mean of
the X prompts at that row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from core.analyses.translation.causal import DEFAULT_PAIRS
from core.analyses.translation.patching import band, last_residuals, prompt_ids, word_probs
from core.analyses.translation.prompts import build_prompt, language_tokens
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet

if TYPE_CHECKING:
    from core.analyses.translation.analysis import Settings

READ = ("x", "y", "en")  # the answer in X, in Y, in English: array order


@dataclass
class SteeringResult:
    """``probs`` [copy, prompt, READ]: copy 0 the held-out prompts unsteered, copy 1 + ℓ steered at lens row ℓ;
    ``direction_norm`` [row]: the length of the mean difference at each row."""

    n_layers: int
    x: str
    y: str
    alpha: float
    n_direction: int  # concepts whose prompts made the direction
    prompts: pd.DataFrame  # row, word_x, word_y, word_en, prompt (the held-out prompts steered)
    dropped: pd.DataFrame  # row, reason, detail
    probs: np.ndarray
    direction_norm: np.ndarray

    def curves(self) -> pd.DataFrame:
        """One row per steered lens row: layer, p_x, p_y, p_en (means) with _lo / _hi (95% bands), direction_norm."""
        frame = pd.DataFrame({"layer": range(self.n_layers + 1)})
        for i, name in enumerate(READ):
            mean, lo, hi = band(self.probs[1:, :, i])
            frame[f"p_{name}"], frame[f"p_{name}_lo"], frame[f"p_{name}_hi"] = mean, lo, hi
        frame["direction_norm"] = self.direction_norm
        return frame

    def clean(self) -> dict:
        return {f"p_{name}": float(self.probs[0, :, i].mean()) for i, name in enumerate(READ)}

    @property
    def peak_layer(self) -> int:
        """The row where steering gives the answer in X the most probability."""
        return int(self.curves()["p_x"].to_numpy().argmax())

    def flips(self) -> list[int]:
        """Rows where, steered, the answer is more likely in X than in Y (means)."""
        c = self.curves()
        return [int(layer) for layer in c.loc[c["p_x"] > c["p_y"], "layer"]]

    def to_json(self) -> dict:
        return {
            "x": self.x, "y": self.y, "alpha": self.alpha, "n_direction": self.n_direction,
            "n_prompts": len(self.prompts), "n_dropped": len(self.dropped), "clean": self.clean(),
            "layers": [
                {"layer": int(row["layer"]), **{f"p_{name}": float(row[f"p_{name}"]) for name in READ},
                 "ci": {f"p_{name}": [float(row[f"p_{name}_lo"]), float(row[f"p_{name}_hi"])] for name in READ},
                 "direction_norm": float(row["direction_norm"])}
                for _, row in self.curves().iterrows()
            ],
            "peak_layer": self.peak_layer,
            "flips": self.flips(),
        }


def _concepts(tokenizer, settings: Settings) -> tuple[list[tuple[int, tuple]], pd.DataFrame]:
    """Concepts in a seeded order whose X, Y and English words can be written and told apart: (row, sets)."""
    s = settings
    x, y = s.steer
    words = s.word_list.words
    order = list(range(len(s.word_list)))
    random.Random(f"{s.seed}|steer|{s.source}|{x}|{y}").shuffle(order)
    kept, dropped = [], []
    for row in order:
        codes = (x, y, "en")
        sets = tuple(language_tokens(tokenizer, words[code][row]) for code in codes)
        if any(t.empty for t in sets) or language_tokens(tokenizer, words[s.source][row]).empty:
            dropped.append((row, "tokenizer cannot write the word", ""))
            continue
        clash = [(codes[i], codes[j]) for i in range(3) for j in range(i + 1, 3)
                 if codes[i] != codes[j] and sets[i].overlaps(sets[j])]
        if clash:
            dropped.append((row, "token sets overlap", ", ".join(f"{a}/{b}" for a, b in clash)))
            continue
        kept.append((row, sets))
    return kept, pd.DataFrame(dropped, columns=["row", "reason", "detail"])


def run_steering(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> SteeringResult:
    """The X − Y direction from half of the usable concepts, added with ``alpha`` to the other half's Y prompts."""
    progress = progress or quiet
    s = settings
    x, y = s.steer
    concepts, dropped = _concepts(handle.tokenizer, s)
    half = len(concepts) // 2
    wanted = s.limit or DEFAULT_PAIRS
    fit, held = concepts[:half][:wanted], concepts[half:][:wanted]
    if len(fit) < 2 or len(held) < 2:
        raise UserError(f"only {len(concepts)} usable concepts for steering {x}→{y}: the direction and the prompts "
                        "steered need at least 2 each; choose other languages or a longer word list")
    words = s.word_list
    into_x = replace(s, task="translation", target=x)
    into_y = replace(s, task="translation", target=y)
    progress(0.0, f"the {x} − {y} direction from {2 * len(fit)} prompts")
    mean_x = last_residuals(handle, prompt_ids(handle, [build_prompt(words, r, into_x) for r, _ in fit])).mean(1)
    mean_y = last_residuals(handle, prompt_ids(handle, [build_prompt(words, r, into_y) for r, _ in fit])).mean(1)
    direction = mean_x - mean_y  # [row, d_model]
    progress(0.3, f"steering {len(held)} prompts at every layer")
    prompts = [build_prompt(words, r, into_y) for r, _ in held]
    probs = word_probs(handle, prompt_ids(handle, prompts), [sets for _, sets in held],
                       (s.alpha * direction).unsqueeze(1), "add", progress=part(progress, 0.3, 1.0))
    frame = pd.DataFrame({"row": [r for r, _ in held], "word_x": [words.words[x][r] for r, _ in held],
                          "word_y": [words.words[y][r] for r, _ in held],
                          "word_en": [words.words["en"][r] for r, _ in held], "prompt": prompts})
    return SteeringResult(handle.n_layers, x, y, float(s.alpha), len(fit), frame, dropped, probs,
                          torch.linalg.vector_norm(direction, dim=-1).numpy())
