"""Single heads: successor scores of every head (Gould et al., "Successor Heads", arXiv 2312.09230) and
the head inspector (one head's attention pattern on a prompt, with its successor scores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core import interventions as iv
from core.analyses.sequences.tasks import LETTERS, MONTHS, NUMBER_WORDS, ORDINALS, WEEKDAYS
from core.errors import UserError
from core.interventions import Component
from core.models.handle import ModelHandle
from core.progress import Progress, part
from core.tokens import token_str

SUCCESSOR_SETS: dict[str, tuple[str, ...]] = {
    "numbers 1–200": tuple(str(i) for i in range(1, 201)),
    "number words": tuple(NUMBER_WORDS),
    "ordinals": tuple(ORDINALS),
    "weekdays": tuple(WEEKDAYS),
    "months": tuple(MONTHS),
    "letters": tuple(LETTERS),
}


def successor_tokens(tokenizer, members: Sequence[str]) -> list[tuple[int, int]]:
    """(member index, token id) for members that are one token: with a leading space if possible, else bare."""
    out = []
    for i, word in enumerate(members):
        for text in (" " + word, word):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                out.append((i, ids[0]))
                break
    return out


@dataclass
class SuccessorScores:
    """Successor score of every head on every ordered token set.

    ``frame`` columns: layer, head, component, token_set, score (fraction of tokens t whose successor gets
    the highest logit among the set through the head's OV circuit applied to t's embedding after the
    first MLP), n_tokens (tokens t scored). ``tokens`` lists each set's tokens kept (single tokens only).
    """

    frame: pd.DataFrame
    tokens: dict[str, list[str]]

    def overall(self) -> pd.DataFrame:
        """Mean over token sets per head, best first. Columns: layer, head, component, score, best_set."""
        scored = self.frame[self.frame["n_tokens"] > 0]
        mean = scored.groupby(["layer", "head", "component"], as_index=False)["score"].mean()
        best = scored.loc[scored.groupby(["layer", "head"])["score"].idxmax(), ["layer", "head", "token_set"]]
        return mean.merge(best.rename(columns={"token_set": "best_set"}), on=["layer", "head"]).sort_values(
            "score", ascending=False).reset_index(drop=True)




def successor_scores(handle: ModelHandle, progress: Progress | None = None, layers_per_pass: int = 8) -> SuccessorScores:
    """Successor scores of every head (Gould et al. 2023): embedding → first MLP → head OV → final norm → unembedding.

    They depend on the weights only, so they are computed once per loaded model (``core.cache.PerModel``).
    """
    return handle.cached("sequences.successor_scores", lambda: _successor_scores(handle, progress, layers_per_pass))


def _successor_scores(handle: ModelHandle, progress: Progress | None, layers_per_pass: int) -> SuccessorScores:
    report = part(progress, 0, 1)
    sets = {name: successor_tokens(handle.tokenizer, members) for name, members in SUCCESSOR_SETS.items()}
    all_ids = sorted({t for kept in sets.values() for _, t in kept})
    if not all_ids:
        raise UserError("none of the successor token sets has single tokens in this tokenizer")
    position = {t: i for i, t in enumerate(all_ids)}
    report(0.05, f"{len(all_ids)} tokens through the first MLP")
    embedded = handle.after_first_mlp(all_ids)
    rows = []
    for first in range(0, handle.n_layers, layers_per_pass):
        layers = list(range(first, min(handle.n_layers, first + layers_per_pass)))
        report(0.1 + 0.9 * first / handle.n_layers, f"OV circuits of layers {layers[0]}–{layers[-1]}")
        outputs = handle.head_ov(embedded, layers)  # [layer, head, token, d_model]
        for name, kept in sets.items():
            index = {member: k for k, (member, _) in enumerate(kept)}
            ids = torch.tensor([t for _, t in kept], dtype=torch.long)
            scored = [(k, index[member + 1]) for k, (member, _) in enumerate(kept) if member + 1 in index]
            source = torch.tensor([position[t] for _, t in kept], dtype=torch.long)
            for li, layer in enumerate(layers):
                if not scored:  # fewer than two consecutive members are single tokens in this tokenizer
                    rows += [(layer, head, Component(layer, head).label, name, float("nan"), 0) for head in range(handle.n_heads)]
                    continue
                with torch.inference_mode():
                    x = outputs[li][:, source.to(outputs.device)]  # [head, set token, d_model]
                    logits = handle.token_logits(x.reshape(-1, x.shape[-1]), ids).reshape(handle.n_heads, len(kept), len(kept))
                best = logits.argmax(-1).cpu()
                for head in range(handle.n_heads):
                    hits = sum(int(best[head, k] == succ) for k, succ in scored)
                    rows.append((layer, head, Component(layer, head).label, name, hits / len(scored), len(scored)))
    frame = pd.DataFrame(rows, columns=["layer", "head", "component", "token_set", "score", "n_tokens"])
    tokens = {name: [token_str(handle.tokenizer, t) for _, t in kept] for name, kept in sets.items()}
    report(1.0, "done")
    return SuccessorScores(frame, tokens)


@dataclass
class HeadInspection:
    """One head on one prompt: its attention pattern and successor scores.

    ``pattern`` is Float[ndarray, "query key"] (rows sum to 1); ``successor`` has this head's rows of
    ``SuccessorScores.frame``; ``ranking`` is every head's mean successor score, best first.
    """

    layer: int
    head: int
    prompt: str
    tokens: list[str]
    pattern: np.ndarray
    successor: pd.DataFrame
    ranking: pd.DataFrame
    tokens_per_set: dict[str, list[str]] = field(default_factory=dict)

    def pattern_frame(self) -> pd.DataFrame:
        """Long form: query, key (positions), query_token, key_token, weight."""
        t = len(self.tokens)
        return pd.DataFrame([(q, k, self.tokens[q], self.tokens[k], float(self.pattern[q, k]))
                             for q in range(t) for k in range(t)],
                            columns=["query", "key", "query_token", "key_token", "weight"])


def head_attention(handle: ModelHandle, prompt: str, layer: int, head: int) -> tuple[list[str], np.ndarray]:
    """(tokens, [query, key] attention weights) of one head on one prompt."""
    if not 0 <= head < handle.n_heads:
        raise UserError(f"head {head} does not exist: choose 0..{handle.n_heads - 1}")
    batch = handle.encode([prompt])
    weights = handle.attention_pattern(batch, layer)[0, head].numpy()
    tokens = [token_str(handle.tokenizer, t) for t in batch.input_ids[0].tolist()]
    return tokens, weights


def inspect_head(handle: ModelHandle, prompt: str, layer: int, head: int, scores: SuccessorScores | None = None,
                 progress: Progress | None = None) -> HeadInspection:
    """Attention pattern of head (layer, head) on ``prompt`` and its successor scores (all heads ranked)."""
    tokens, pattern = head_attention(handle, prompt, layer, head)
    scores = scores or successor_scores(handle, progress)
    frame = scores.frame
    mine = frame[(frame["layer"] == layer) & (frame["head"] == head)].reset_index(drop=True)
    return HeadInspection(layer, head, prompt, tokens, pattern, mine, scores.overall(), scores.tokens)
