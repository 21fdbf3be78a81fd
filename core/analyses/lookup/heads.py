"""Retrieval heads: the heads that attend from the answer position to the queried pair (or the subject),
confirmed by exact ablation through ``core.interventions``.

Attention is read from up to ``ATTENTION_PROMPTS`` prompts and ``ATTENTION_TOKENS`` tokens (at least two
prompts; every layer's pattern costs a partial forward pass, so the patterns cost ~n_layers/2 passes);
the top heads are then ablated one at a time, and all together, on every prompt: mean ablation over
the prompts of the same token length (a prompt without such a partner is zero-ablated, and the result
says so). ``pct_of_full`` = 100 · mean p(answer) with the head ablated / mean p(answer) of the full model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core import interventions as iv
from core.analyses.lookup.answers import Item, answer_probs, make_batch
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet

ATTENTION_PROMPTS = 8
ATTENTION_TOKENS = 160
ABLATIONS = ("mean", "zero")


@dataclass
class Heads:
    """``attention``: Float[array, "layer head"], mean attention weight from the answer position to the
    span; ``table``: the top heads (layer, head, component, attention, p_answer, pct_of_full, accuracy),
    by attention; ``together``: the same metrics with all of them ablated at once."""

    attention: np.ndarray
    table: pd.DataFrame
    full_p: float
    full_accuracy: float
    together: dict = field(default_factory=dict)
    ablation: str = "mean"
    zero_ablated: int = 0  # prompts without a same-length partner (zero-ablated instead of mean)
    attention_prompts: int = 0


def attention_to_span(handle: ModelHandle, items: Sequence[Item], progress: Progress | None = None) -> np.ndarray:
    """Mean over ``items`` of the attention weight each head puts, from the last position, on the span."""
    progress = progress or quiet
    batch = make_batch(handle, [it.ids for it in items])
    width = batch.input_ids.shape[1]
    mask = torch.zeros(len(items), width)
    for row, it in enumerate(items):
        pad = width - len(it.ids)
        mask[row, pad + it.span[0]: pad + it.span[1]] = 1.0
    scores = np.zeros((handle.n_layers, handle.n_heads))
    for layer in range(handle.n_layers):
        weights = handle.attention_pattern(batch, layer)[:, :, -1, :]  # [batch, head, key]
        scores[layer] = (weights * mask[:, None, :]).sum(-1).mean(0).numpy()
        progress((layer + 1) / handle.n_layers, f"attention patterns: layer {layer + 1}/{handle.n_layers}")
    return scores


def retrieval_heads(handle: ModelHandle, items: Sequence[Item], top_k: int = 5, ablation: str = "mean",
                    progress: Progress | None = None) -> Heads:
    """The ``top_k`` heads attending most to the span, each ablated alone and all together."""
    if top_k <= 0:  # nothing to confirm: no attention patterns, no ablations
        empty = pd.DataFrame(columns=["layer", "head", "component", "attention", "p_answer", "pct_of_full", "accuracy"])
        return Heads(np.zeros((handle.n_layers, handle.n_heads)), empty, float("nan"), float("nan"), {}, ablation)
    with_span = [it for it in items if it.span[1] > it.span[0]]
    longest = max((len(it.ids) for it in with_span), default=1)
    attention_items = with_span[: max(2, min(ATTENTION_PROMPTS, ATTENTION_TOKENS // longest))]
    if not attention_items:
        attention = np.zeros((handle.n_layers, handle.n_heads))
    else:
        attention = attention_to_span(handle, attention_items, part(progress, 0.0, 0.5))
    order = np.argsort(-attention, axis=None, kind="stable")[: max(0, top_k)]
    top = [iv.Component(int(i // handle.n_heads), int(i % handle.n_heads)) for i in order]
    variants = [[c] for c in top] + ([top] if len(top) > 1 else [])
    sums = np.zeros(len(variants))
    hits = np.zeros(len(variants))
    full_p = full_hits = 0.0
    zero_ablated = 0
    groups: dict[int, list[Item]] = defaultdict(list)
    for it in items:
        groups[len(it.ids)].append(it)
    ablate_progress = part(progress, 0.5, 1.0)
    for done, group in enumerate(groups.values(), start=1):
        batch = make_batch(handle, [it.ids for it in group])
        run = handle.record_run(batch)
        answers = torch.tensor([it.answer[0] for it in group])
        p, top1 = answer_probs(handle, run.final, answers)
        full_p += float(p.sum())
        full_hits += float((top1 == answers).sum())
        if variants:
            kind = ablation if len(group) > 1 else "zero"
            zero_ablated += len(group) if kind == "zero" and ablation != "zero" else 0
            values = iv.replacement(kind, run.activations, len(group))
            finals = handle.run_variants(run, values, variants)  # [variant, batch, d_model]
            p, top1 = answer_probs(handle, finals, answers.expand(len(variants), -1))
            sums += p.sum(1).numpy()
            hits += (top1 == answers).sum(1).numpy()
        ablate_progress(done / len(groups), f"ablations: {done}/{len(groups)} groups of equal-length prompts")
    n = len(items)
    full_mean = full_p / n
    rows = []
    for c, total, correct in zip(top, sums, hits):
        rows.append({"layer": c.layer, "head": c.head, "component": c.label,
                     "attention": float(attention[c.layer, c.head]), "p_answer": total / n,
                     "pct_of_full": _pct(total / n, full_mean), "accuracy": correct / n})
    together = {}
    if len(top) > 1:
        together = {"components": [c.label for c in top], "p_answer": sums[-1] / n,
                    "pct_of_full": _pct(sums[-1] / n, full_mean), "accuracy": hits[-1] / n}
    table = pd.DataFrame(rows, columns=["layer", "head", "component", "attention", "p_answer", "pct_of_full", "accuracy"])
    return Heads(attention, table, full_mean, full_hits / n, together, ablation, zero_ablated, len(attention_items))


def _pct(value: float, full: float) -> float:
    return 100.0 * value / full if full > 0 else float("nan")
