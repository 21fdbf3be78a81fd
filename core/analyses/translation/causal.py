"""Concept patching (Dumas et al., ACL 2025, "Separating Tongue from Thought"): is the concept carried apart from its
language?

A source prompt translates concept A (``source`` → ``target``, e.g. ``Deutsch: "Wasser" - Español: "``); a
receiving prompt translates concept B in another pair (``into``, e.g. French → Chinese). The source prompt's
residual at its last position, read at lens row ℓ, replaces the receiving prompt's at its last position (``onward``:
at every row from ℓ to the last block's input). At the receiver's output we read p(A in the receiver's output
language): the concept moved without its language; p(B): nothing moved; p(A in the source's output language): the
concept moved with its language. Pairs are drawn by seed; a pair is dropped when one of the words cannot be written
or two of the three token sets overlap (the words could not be told apart).

Row n_layers is the last block's output: patched there, the receiver's output distribution is the source's.
With ``onward`` every row ℓ ≤ n_layers − 1 gives the same output as row n_layers − 1 alone: positions before the
last never read the last one, so only the value entering the last block survives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.analyses.translation.patching import band, last_residuals, prompt_ids, word_probs
from core.analyses.translation.prompts import LanguageTokens, build_prompt, language_tokens
from core.analyses.translation.wordlist import LANGUAGES
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet

if TYPE_CHECKING:
    from core.analyses.translation.analysis import Settings

DEFAULT_PAIRS = 100
WORDS = ("a_receiver_lang", "b", "a_source_lang")  # what is read at the receiver's output, in array order


@dataclass(frozen=True)
class ConceptPair:
    a: int  # word-list row of concept A (the source prompt's)
    b: int  # word-list row of concept B (the receiving prompt's)
    source_prompt: str
    receiver_prompt: str
    words: dict  # WORDS key -> the word read
    sets: tuple[LanguageTokens, ...]  # in WORDS order


def draw_pairs(tokenizer, settings: Settings) -> tuple[list[ConceptPair], pd.DataFrame]:
    """Up to ``settings.limit`` (default ``DEFAULT_PAIRS``) usable pairs, drawn by seed; and the dropped ones
    (a, b, reason, detail). Each concept is A once and B once at most (B is the next concept in a seeded order)."""
    s = settings
    words = s.word_list
    receiver_in, receiver_out = s.into
    wanted = s.limit or DEFAULT_PAIRS
    order = list(range(len(words)))
    random.Random(f"{s.seed}|causal|{s.source}|{s.target}|{receiver_in}|{receiver_out}").shuffle(order)
    source_settings = replace(s, task="translation")
    receiver_settings = replace(s, task="translation", source=receiver_in, target=receiver_out)
    kept, dropped = [], []
    for i, a in enumerate(order):
        if len(kept) == wanted or len(order) < 2:
            break
        b = order[(i + 1) % len(order)]
        read = {"a_receiver_lang": words.words[receiver_out][a], "b": words.words[receiver_out][b],
                "a_source_lang": words.words[s.target][a]}
        sets = tuple(language_tokens(tokenizer, read[key]) for key in WORDS)
        given = {f"A in {LANGUAGES[s.source].english_name}": words.words[s.source][a],
                 f"B in {LANGUAGES[receiver_in].english_name}": words.words[receiver_in][b]}
        unwritable = [name for name, t in zip(WORDS, sets) if t.empty]
        unwritable += [name for name, w in given.items() if language_tokens(tokenizer, w).empty]
        clash = [(WORDS[x], WORDS[y]) for x in range(3) for y in range(x + 1, 3) if sets[x].overlaps(sets[y])]
        if unwritable:
            dropped.append((a, b, "tokenizer cannot write the word", ", ".join(unwritable)))
        elif clash:
            detail = "; ".join(f"{x} {read[x]!r} and {y} {read[y]!r}" for x, y in clash)
            dropped.append((a, b, "token sets overlap", detail))
        else:
            kept.append(ConceptPair(a, b, build_prompt(words, a, source_settings, avoid=(b,)),
                                    build_prompt(words, b, receiver_settings, avoid=(a,)), read, sets))
    frame = pd.DataFrame(dropped, columns=["a", "b", "reason", "detail"])
    if len(kept) < 2:
        reasons = ", ".join(f"{k}: {v}" for k, v in frame["reason"].value_counts().items()) or "the list is too short"
        raise UserError(
            f"only {len(kept)} usable concept pair(s) for {s.source}→{s.target} patched into "
            f"{receiver_in}→{receiver_out} ({reasons}): concept patching needs at least 2; choose other languages "
            "or a longer word list")
    return kept, frame


@dataclass
class CausalResult:
    """Concept patching over ``pairs``. ``probs`` [copy, pair, word]: copy 0 the receiving prompt untouched, copy
    1 + ℓ patched at lens row ℓ; words in ``WORDS`` order."""

    n_layers: int
    into: tuple[str, str]
    onward: bool
    pairs: pd.DataFrame  # a, b (word-list rows), a_source_word, b_receiver_word, word_<w> for
    # each w of WORDS (the word read), source_prompt, receiver_prompt
    dropped: pd.DataFrame  # a, b, reason, detail
    probs: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def curves(self) -> pd.DataFrame:
        """One row per patched lens row: layer, then per word of ``WORDS`` p_<word> (mean over pairs) with
        p_<word>_lo / _hi (95% band, mean ± 1.96·σ/√n)."""
        frame = pd.DataFrame({"layer": range(self.n_layers + 1)})
        for w, name in enumerate(WORDS):
            mean, lo, hi = band(self.probs[1:, :, w])
            frame[f"p_{name}"], frame[f"p_{name}_lo"], frame[f"p_{name}_hi"] = mean, lo, hi
        return frame

    def clean(self) -> dict:
        """The receiving prompts untouched: mean p of each word."""
        return {f"p_{name}": float(self.probs[0, :, w].mean()) for w, name in enumerate(WORDS)}

    @property
    def transfer_layer(self) -> int | None:
        """The first lens row where p(A in the receiver's language) beats p(B) (means over pairs)."""
        curves = self.curves()
        wins = np.flatnonzero(curves["p_a_receiver_lang"].to_numpy() > curves["p_b"].to_numpy())
        return int(wins[0]) if len(wins) else None

    @property
    def fades_at(self) -> int | None:
        """The first row after ``transfer_layer`` where A in the receiver's language no longer beats both B and A in
        the source's language (the concept stays behind, or its language comes with it); None if it never fades."""
        start = self.transfer_layer
        if start is None:
            return None
        c = self.curves()
        a, rivals = c["p_a_receiver_lang"].to_numpy(), np.maximum(c["p_b"].to_numpy(), c["p_a_source_lang"].to_numpy())
        lost = [layer for layer in range(start + 1, self.n_layers + 1) if a[layer] <= rivals[layer]]
        return lost[0] if lost else None

    def transfer_layers(self) -> list[int]:
        """Rows where the concept moved without its language beyond doubt: the lower band of p(A in the receiver's
        language) above the upper bands of p(B) and of p(A in the source's language)."""
        c = self.curves()
        above = (c["p_a_receiver_lang_lo"] > c["p_b_hi"]) & (c["p_a_receiver_lang_lo"] > c["p_a_source_lang_hi"])
        return [int(layer) for layer in c.loc[above, "layer"]]

    def pair_frame(self) -> pd.DataFrame:
        """One row per (pair, patched row): a, b, layer, then p_<word> for each of ``WORDS``."""
        copies, n, _ = self.probs.shape
        layer = np.tile(np.arange(copies - 1), n)
        pair = np.repeat(np.arange(n), copies - 1)
        frame = self.pairs[["a", "b"]].iloc[pair].reset_index(drop=True)
        frame["layer"] = layer
        for w, name in enumerate(WORDS):
            frame[f"p_{name}"] = self.probs[1 + layer, pair, w]
        return frame

    def to_json(self) -> dict:
        return {
            "n_pairs": self.n_pairs,
            "n_dropped": len(self.dropped),
            "into": list(self.into),
            "onward": self.onward,
            "clean": self.clean(),
            "layers": [
                {"layer": int(row["layer"]),
                 **{f"p_{name}": float(row[f"p_{name}"]) for name in WORDS},
                 "ci": {f"p_{name}": [float(row[f"p_{name}_lo"]), float(row[f"p_{name}_hi"])] for name in WORDS}}
                for _, row in self.curves().iterrows()
            ],
            "transfer_layer": self.transfer_layer,
            "fades_at": self.fades_at,
            "transfer_layers": self.transfer_layers(),
        }


def run_causal(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> CausalResult:
    """Concept patching of ``settings`` (``into``, ``onward``, ``limit`` pairs, ``seed``, ``shots``)."""
    progress = progress or quiet
    pairs, dropped = draw_pairs(handle.tokenizer, settings)
    sources = prompt_ids(handle, [p.source_prompt for p in pairs])
    receivers = prompt_ids(handle, [p.receiver_prompt for p in pairs])
    progress(0.0, f"recording {len(pairs)} source prompts")
    values = last_residuals(handle, sources)  # [row, pair, d_model]
    probs = word_probs(handle, receivers, [p.sets for p in pairs], values, "replace", settings.onward,
                       part(progress, 0.1, 1.0))
    words = settings.word_list.words
    frame = pd.DataFrame({
        "a": [p.a for p in pairs], "b": [p.b for p in pairs],
        "a_source_word": [words[settings.source][p.a] for p in pairs],
        "b_receiver_word": [words[settings.into[0]][p.b] for p in pairs],
        **{f"word_{name}": [p.words[name] for p in pairs] for name in WORDS},
        "source_prompt": [p.source_prompt for p in pairs], "receiver_prompt": [p.receiver_prompt for p in pairs],
    })
    return CausalResult(handle.n_layers, tuple(settings.into), settings.onward, frame, dropped, probs)
