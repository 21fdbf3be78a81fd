"""One word of a translation run under the lens: every position of its prompt, the answer's top-k by language."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.analyses.translation.analysis import Result, Settings
from core.analyses.translation.prompts import SLOTS
from core.analyses.translation.wordlist import LANGUAGES, scripts_in
from core.errors import UserError
from core.lens import LensResult, run_lens
from core.lenses import lens_for
from core.models.handle import ModelHandle


@dataclass
class DrillDown:
    """One word under the lens: every position of its prompt, and the answer position's top-k by language."""

    prompt: str
    lens: LensResult  # positions="all"
    table: pd.DataFrame  # layer, rank, token, token_id, prob, language


def token_language(text: str, token_id: int, sets: dict, settings: Settings) -> str:
    """A label for colouring a token: the tracked language whose set holds it, else its script."""
    for slot in SLOTS:
        if token_id in sets[slot]:
            code = getattr(settings, slot)
            return f"{slot}: {LANGUAGES[code].english_name}"
    scripts = scripts_in(text)
    if not scripts:
        return "no letters" if text.strip() else "space"
    if len(scripts) > 1:
        return "mixed scripts"
    return f"other {next(iter(scripts))}"


def drill_down(handle: ModelHandle, result: Result, word: int, top_k: int = 10) -> DrillDown:
    """The lens of kept word ``word``'s prompt at every position; its answer position's top-k, labelled."""
    if not 0 <= word < result.n_words:
        raise UserError(f"word {word} is not one of the {result.n_words} words of this run")
    prompt = result.words["prompt"].iloc[word]
    lens = run_lens(handle, prompt, positions="all", top_k=top_k, lens=lens_for(handle, result.settings.lens))
    last = len(lens.positions[0]) - 1
    rows = []
    for layer in lens.layers:
        for rank in range(top_k):
            tid = int(lens.top_ids[layer, 0, last, rank])
            text = lens.top_tokens[layer][0][last][rank]
            rows.append((layer, rank + 1, text, tid, float(lens.top_probs[layer, 0, last, rank]),
                         token_language(text, tid, result.token_sets[word], result.settings)))
    table = pd.DataFrame(rows, columns=["layer", "rank", "token", "token_id", "prob", "language"])
    return DrillDown(prompt, lens, table)
