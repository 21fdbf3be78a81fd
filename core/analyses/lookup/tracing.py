"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

Corrupt: Gaussian noise of ``noise`` × the std of the embeddings (seeded) is added to the subject tokens'
embeddings, as the first block sees them. Restore: in the corrupted run, one state at (layer, position)
takes its value from the clean run: the residual stream entering a block (``residual``, layer 0 = the
embeddings), a block's MLP output (``mlp``) or its attention output (``attention``, the input of the
output projection: every head at once), over a window of ``window`` blocks for the last two. The indirect
effect is p(answer | restored) − p(answer | corrupted).

Every restoration is one row of a batched pass: the clean and the corrupted passes are recorded once
(``core.interventions.record``), and rows whose earliest restored layer is l resume from the corrupted
pass's input to layer l, as the ablations do, so the whole heatmap costs a few forward passes.
Positions before the subject are the same in both runs (the model is causal), and so are the embeddings
after it: their effect is exactly 0 and they are not run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core import interventions as iv
from core.analyses.lookup.answers import answer_probs, make_batch
from core.errors import UserError
from core.models.handle import ModelHandle
from core.models.sites import Edit, Site
from core.progress import Progress, quiet
from core.tokens import token_str

KINDS = ("residual", "mlp", "attention")
TOKENS_PER_PASS = 8192
MIN_TOKENS_PER_PASS = 512


def embedding_std(handle: ModelHandle) -> float:
    """Std of every entry of the token embeddings, scaled as the first block sees them (Gemma multiplies by √d)."""
    def compute() -> float:
        return float(handle.weights.embedding().float().std()) * handle.weights.embedding_scale()

    return handle.cached("embedding_std", compute)


@dataclass(frozen=True)
class Restoration:
    """States to copy from the clean run: ``kind`` at each of ``layers`` and each of ``positions``
    (``residual``: block inputs 0..n_layers-1; ``mlp`` / ``attention``: blocks 0..n_layers-1)."""

    kind: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]


@dataclass
class Corrupted:
    """A prompt's clean and corrupted passes (both recorded, batch of one) and p(answer) in each."""

    clean: iv.CleanRun
    corrupt: iv.CleanRun
    answer_id: int
    p_clean: float
    p_corrupt: float
    noise_std: float


def corrupt(handle: ModelHandle, ids: Sequence[int], subject: tuple[int, int], answer_id: int,
            noise: float = 3.0, seed: int = 0) -> Corrupted:
    """Record the clean pass and the pass with noise on the subject's embeddings."""
    start, end = subject
    if not 0 <= start < end <= len(ids):
        raise UserError(f"the subject's tokens ({start}..{end}) are not inside the prompt's {len(ids)} tokens")
    batch = make_batch(handle, [ids])
    std = noise * embedding_std(handle)
    generator = torch.Generator().manual_seed(seed)
    delta = torch.randn(end - start, handle.d_model, generator=generator) * std
    clean = handle.record_run(batch)
    noise = Edit(Site("resid_pre", 0), "add", delta, positions=tuple(range(start, end)))
    noisy = handle.record_run(batch, edits=[noise])  # the recorded calls see the noise
    answer = torch.tensor([answer_id])
    p_clean = float(answer_probs(handle, clean.final, answer)[0][0])
    p_corrupt = float(answer_probs(handle, noisy.final, answer)[0][0])
    return Corrupted(clean, noisy, int(answer_id), p_clean, p_corrupt, std)


def _edits(run: Corrupted, restorations: Sequence[Restoration]) -> list[Edit]:
    """Row i of a batch takes ``restorations[i]``'s states from the clean run: one edit per (kind, layer), its cells
    the (row, position) pairs restored there."""
    where: dict[tuple[str, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for row, r in enumerate(restorations):
        for layer in r.layers:
            rows, positions = where[(r.kind, layer)]
            rows += [row] * len(r.positions)
            positions += list(r.positions)
    edits = []
    for (kind, layer), (rows, positions) in where.items():
        if kind == "residual":
            clean = run.clean.inputs[layer][0]  # [pos, d_model]: the residual entering block ``layer``
            site = Site("resid_pre", layer)
        elif kind == "attention":
            clean = run.clean.activations.heads[layer, 0]  # [pos, head, head_dim]: every head at once
            site = Site("z", layer)
        else:
            clean = run.clean.activations.mlps[layer, 0]  # [pos, d_model]
            site = Site("mlp", layer)
        edits.append(Edit(site, "replace", clean[positions], cells=(tuple(rows), tuple(positions))))
    return edits


def _check(handle: ModelHandle, run: Corrupted, restorations: Sequence[Restoration]) -> None:
    n_positions = run.clean.n_positions
    for r in restorations:
        if r.kind not in KINDS:
            raise UserError(f"unknown restoration '{r.kind}': choose one of {', '.join(KINDS)}")
        if not r.layers or not all(0 <= l < handle.n_layers for l in r.layers):
            raise UserError(f"restored layers {r.layers} are outside 0..{handle.n_layers - 1}")
        if not all(0 <= p < n_positions for p in r.positions):
            raise UserError(f"restored positions {r.positions} are outside the prompt's {n_positions} tokens")


def _passes(starts: Sequence[int], n_positions: int, max_tokens: int, min_tokens: int) -> list[list[int]]:
    """Rows (by index) grouped into passes: in order of their earliest restored layer, a pass closes once it
    holds ``min_tokens`` tokens (small passes cost more in overhead than the layers they skip) and never
    holds more than ``max_tokens``. A pass resumes from the earliest layer among its rows: the layers a
    row runs before its own restored layer compute the corrupted states again, unchanged."""
    passes: list[list[int]] = [[]]
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    for position, i in enumerate(order):
        if passes[-1] and (len(passes[-1]) + 1) * n_positions > max_tokens:
            passes.append([])
        passes[-1].append(i)
        boundary = position + 1 < len(order) and starts[order[position + 1]] != starts[i]
        if boundary and len(passes[-1]) * n_positions >= min_tokens:
            passes.append([])
    return [p for p in passes if p]


def restore(handle: ModelHandle, run: Corrupted, restorations: Sequence[Restoration],
            max_tokens: int = TOKENS_PER_PASS, min_tokens: int = MIN_TOKENS_PER_PASS,
            progress: Progress | None = None) -> np.ndarray:
    """p(answer) in the corrupted run with each restoration applied (one row each, batched)."""
    _check(handle, run, restorations)
    progress = progress or quiet
    starts = [min(r.layers) for r in restorations]
    passes = _passes(starts, run.corrupt.n_positions, max_tokens, min_tokens)
    finals = torch.empty(len(restorations), handle.d_model, dtype=run.corrupt.final.dtype)
    work = sum((handle.n_layers - min(starts[i] for i in rows)) * len(rows) for rows in passes) or 1
    done = 0
    for rows in passes:
        start, n = min(starts[i] for i in rows), len(rows)
        final = handle.resume(run.corrupt, start, n, _edits(run, [restorations[i] for i in rows]))
        finals[rows] = final.to(finals.device, finals.dtype)
        done += (handle.n_layers - start) * n
        progress(done / work, f"restorations from layer {start}: {n} in one pass")
    p, _ = answer_probs(handle, finals, torch.full((len(restorations),), run.answer_id))  # one decode for all
    return p.numpy()


@dataclass
class Trace:
    """Indirect effects of one fact. ``effects[kind]`` is Float[array, "layer position"] over every
    position of the prompt: ``residual`` has n_layers + 1 rows (0 = embeddings, n_layers = the output),
    ``mlp`` and ``attention`` one per block."""

    tokens: list[str]
    subject: tuple[int, int]
    answer: str
    p_clean: float
    p_corrupt: float
    noise_std: float
    window: int
    effects: dict[str, np.ndarray] = field(default_factory=dict)

    def peak(self, kind: str = "residual") -> dict:
        """Where the indirect effect is largest."""
        effect = self.effects[kind]
        layer, position = np.unravel_index(int(np.argmax(effect)), effect.shape)
        return {"kind": kind, "layer": int(layer), "position": int(position), "token": self.tokens[position],
                "indirect_effect": float(effect[layer, position])}

    def frame(self) -> pd.DataFrame:
        """One row per (kind, layer, position): kind, layer, position, token, subject, indirect_effect."""
        rows = []
        for kind, effect in self.effects.items():
            for layer in range(effect.shape[0]):
                for position, token in enumerate(self.tokens):
                    rows.append((kind, layer, position, token, self.subject[0] <= position < self.subject[1],
                                 float(effect[layer, position])))
        return pd.DataFrame(rows, columns=["kind", "layer", "position", "token", "subject", "indirect_effect"])


def window_of(layer: int, window: int, n_layers: int) -> tuple[int, ...]:
    """``window`` blocks centred on ``layer`` (clipped to the model)."""
    low = max(0, min(layer - window // 2, n_layers - window))
    return tuple(range(low, min(n_layers, low + window)))


def trace(handle: ModelHandle, ids: Sequence[int], subject: tuple[int, int], answer_id: int, *,
          noise: float = 3.0, seed: int = 0, kinds: Sequence[str] = KINDS, window: int = 1,
          progress: Progress | None = None) -> Trace:
    """Every (layer, position) restoration of every kind in ``kinds``, batched."""
    if not 1 <= window <= handle.n_layers:
        raise UserError(f"the restoration window must be 1..{handle.n_layers} layers, got {window}")
    run = corrupt(handle, ids, subject, answer_id, noise, seed)
    n, n_layers = len(ids), handle.n_layers
    positions = range(subject[0], n)  # earlier positions are untouched by the noise: effect 0
    restorations, cells = [], []
    for kind in kinds:
        for layer in range(n_layers):
            layers = (layer,) if kind == "residual" else window_of(layer, window, n_layers)
            for position in positions:
                if kind == "residual" and layer == 0 and position >= subject[1]:
                    continue  # the embeddings after the subject carry no noise: restoring them is no change
                restorations.append(Restoration(kind, layers, (position,)))
                cells.append((kind, layer, position))
    p = restore(handle, run, restorations, progress=progress)
    effects = {kind: np.zeros((n_layers + (kind == "residual"), n)) for kind in kinds}
    for (kind, layer, position), value in zip(cells, p):
        effects[kind][layer, position] = value - run.p_corrupt
    if "residual" in effects:  # the output layer: only the last position reaches the prediction
        effects["residual"][n_layers, n - 1] = run.p_clean - run.p_corrupt
    tokens = [token_str(handle.tokenizer, t) for t in ids]
    return Trace(tokens, subject, token_str(handle.tokenizer, answer_id), run.p_clean, run.p_corrupt,
                 run.noise_std, window, effects)
