"""Which tokens are a fact's subject, when the CSV does not say: the word span whose noising hides the answer.

Causal tracing corrupts the subject (``tracing.corrupt``). An uploaded ``prompt,answer`` CSV names no subject, so
every span of 1..``MAX_SPAN_WORDS`` consecutive words of the fact's own prompt (the demonstrations before it, and
its last word, which predicts the answer, are left out) is noised in its own row of ONE batched pass, with the
noise ``corrupt`` would add there (same scale, same seed), and p(answer) read at the last position. Longer spans
carry more noise and tend to hide more, so the chosen span is the shortest whose drop in p(answer) is at least
``NEAR_BEST`` of the largest drop; among equally short ones, the one ending latest. On a small model the 3× noise
saturates: relation words count as much as the entity ("capital", "of" and "France" each take Paris from 0.52 to
0.01–0.02 on Gemma 3 270M), and the entity usually comes after the relation words that precede it ("The capital
of France"), its last token being where the fact is recalled (Meng et al.). The candidates and their drops travel
with the result, so a reader can see how close the call was, and pick another span.

``span_of_text`` and ``span_of_tokens`` turn the user's own choice (the span's text, or a token range) into the
span traced instead.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core.analyses.lookup.answers import answer_probs, make_batch, token_span
from core.analyses.lookup.tracing import embedding_std
from core.errors import UserError
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit, Site

MAX_SPAN_WORDS = 3
NEAR_BEST = 0.9
_WORD = re.compile(r"\w+(?:[-'’]\w+)*")


def _spaceless(word: str) -> bool:
    """Written without spaces between words (Chinese, Japanese): its tokens stand for words."""
    return any(unicodedata.name(ch, "").startswith(("CJK", "HIRAGANA", "KATAKANA")) for ch in word)


def word_spans(tokenizer, text: str, prompt_start: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The words of ``text[prompt_start:]`` (the fact's own prompt) as (token span, character span), in order;
    a spaceless run is split into its tokens."""
    out = []
    for match in _WORD.finditer(text, prompt_start):
        start, end = match.span()
        tokens = token_span(tokenizer, text, start, end)
        if _spaceless(match.group()) and tokens[1] - tokens[0] > 1:
            out += [((t, t + 1), (start, end)) for t in range(*tokens)]
        elif not out or tokens != out[-1][0]:
            out.append((tokens, (start, end)))
    return out


def candidate_spans(tokenizer, text: str, prompt_start: int, max_words: int = MAX_SPAN_WORDS) -> list[tuple[int, int]]:
    """Token spans of 1..``max_words`` consecutive words, the prompt's last word left out; distinct, in order."""
    words = word_spans(tokenizer, text, prompt_start)[:-1]
    spans = []
    for first in range(len(words)):
        for last in range(first, min(first + max_words, len(words))):
            span = (words[first][0][0], words[last][0][1])
            if span[1] > span[0] and span not in spans:
                spans.append(span)
    return spans


@dataclass
class SubjectSearch:
    """Each candidate span (token [start, end)), its text, p(answer) with it noised; ``chosen`` indexes them."""

    spans: list[tuple[int, int]]
    texts: list[str]
    p_clean: float
    p_noised: np.ndarray
    chosen: int

    @property
    def drops(self) -> np.ndarray:
        return self.p_clean - self.p_noised

    @property
    def span(self) -> tuple[int, int]:
        return self.spans[self.chosen]

    def frame(self) -> pd.DataFrame:
        """start, end (token span), text, p_noised, drop, chosen: one row per candidate, largest drop first."""
        frame = pd.DataFrame({"start": [s for s, _ in self.spans], "end": [e for _, e in self.spans],
                              "text": self.texts, "p_noised": self.p_noised, "drop": self.drops})
        frame["chosen"] = frame.index == self.chosen
        return frame.sort_values("drop", ascending=False, kind="stable").reset_index(drop=True)


def choose(spans: Sequence[tuple[int, int]], drops: np.ndarray, n_words: Sequence[int]) -> int:
    """The shortest span (in words) whose drop is at least ``NEAR_BEST`` of the largest; among those, the one ending
    latest, then the larger drop. When no span lowers p(answer), the one that raises it least."""
    best = float(np.max(drops))
    if best <= 0:
        return int(np.argmax(drops))
    near = [i for i in range(len(spans)) if drops[i] >= NEAR_BEST * best]
    return min(near, key=lambda i: (n_words[i], -spans[i][1], -drops[i]))


def noise_for(handle: ModelHandle, length: int, noise: float, seed: int) -> torch.Tensor:
    """The noise ``tracing.corrupt`` adds to ``length`` subject tokens: Float[Tensor, "length d_model"]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(length, handle.d_model, generator=generator) * (noise * embedding_std(handle))


def noised_probs(handle: ModelHandle, ids: Sequence[int], spans: Sequence[tuple[int, int]], answer_id: int,
                 noise: float = 3.0, seed: int = 0) -> tuple[float, np.ndarray]:
    """p(answer) at the last position clean, and with each span noised (its own row), from ONE batched pass of
    1 + len(spans) copies of the prompt."""
    one = make_batch(handle, [ids])
    rows = len(spans) + 1
    batch = Batch(one.input_ids.repeat(rows, 1), one.attention_mask.repeat(rows, 1), one.lengths * rows)
    pad = batch.input_ids.shape[1] - len(ids)
    cells_rows, cells_positions, values = [], [], []
    for row, (start, end) in enumerate(spans, start=1):
        cells_rows += [row] * (end - start)
        cells_positions += [pad + p for p in range(start, end)]
        values.append(noise_for(handle, end - start, noise, seed))
    edits = [Edit(Site("resid_pre", 0), "add", torch.cat(values), cells=(tuple(cells_rows), tuple(cells_positions)))]
    final = handle.run_with_edits(batch, edits).final[:, -1]
    p, _ = answer_probs(handle, final, torch.full((rows,), int(answer_id)))
    return float(p[0]), p[1:].numpy()


def find_subject(handle: ModelHandle, ids: Sequence[int], text: str, prompt_start: int, answer_id: int, *,
                 noise: float = 3.0, seed: int = 0, max_words: int = MAX_SPAN_WORDS) -> SubjectSearch | None:
    """The subject of the fact whose prompt is ``text[prompt_start:]`` (``ids``: ``text``'s tokens as scored);
    None when the prompt has no word before its last one."""
    words = word_spans(handle.tokenizer, text, prompt_start)[:-1]
    spans = candidate_spans(handle.tokenizer, text, prompt_start, max_words)
    spans = [s for s in spans if s[1] <= len(ids) - 1]  # never the position that predicts the answer
    if not spans:
        return None
    p_clean, p_noised = noised_probs(handle, ids, spans, answer_id, noise, seed)
    starts = [w[0][0] for w in words]
    ends = [w[0][1] for w in words]
    n_words = [sum(1 for s, e in zip(starts, ends) if s >= span[0] and e <= span[1]) for span in spans]
    texts = [_text(handle, text, ids, span) for span in spans]
    chosen = choose(spans, p_clean - p_noised, n_words)
    return SubjectSearch(list(spans), texts, p_clean, p_noised, chosen)


def _text(handle: ModelHandle, text: str, ids: Sequence[int], span: tuple[int, int]) -> str:
    return handle.tokenizer.decode(list(ids[span[0]:span[1]]), skip_special_tokens=True).strip()


def span_of_text(tokenizer, text: str, prompt_start: int, subject: str) -> tuple[int, int]:
    """The token span of ``subject`` in the fact's own prompt (its first occurrence); ``UserError`` if absent."""
    where = text.find(subject, prompt_start) if subject.strip() else -1
    if where < 0:
        raise UserError(f"the subject '{subject}' is not in the prompt '{text[prompt_start:]}': give a span of the "
                        "prompt's own text")
    return token_span(tokenizer, text, where, where + len(subject))


def span_of_tokens(span: tuple[int, int], n_tokens: int) -> tuple[int, int]:
    """A token range [start, end) checked against the prompt's ``n_tokens`` tokens."""
    start, end = span
    if not 0 <= start < end <= n_tokens:
        raise UserError(f"the subject tokens {start}:{end} are not a span of the prompt's {n_tokens} tokens: give "
                        f"START:END with 0 <= START < END <= {n_tokens}")
    return start, end
