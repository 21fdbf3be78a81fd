"""Ablation sweeps returning numbers only: the mean logit difference with each variant's components ablated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import torch

from core.errors import UserError
from core.interventions.components import Component, replacement
from core.interventions.recorded import capture, record
from core.interventions.variants import run_variants
from core.models.handle import Batch, ModelHandle
from core.progress import Progress


@dataclass
class SweepNumbers:
    """``full``: the mean logit difference of the clean prompts; ``ablated[i]``: with ``variants[i]`` ablated.
    ``n_traces``/``saved_bytes``: passes sent and bytes that came back (remote backends; 0 here)."""

    full: float
    ablated: np.ndarray  # [variant]
    n_traces: int = 0
    saved_bytes: int = 0


def check_pairs(clean: Batch, corrupt: Batch) -> None:
    positions = clean.input_ids.shape[1]
    if len(set(clean.lengths) | set(corrupt.lengths)) != 1 or corrupt.input_ids.shape[1] != positions:
        raise UserError("clean and corrupted prompts must all have the same token length: ablation compares "
                        "positions one to one")


def ablation_sweep(handle: ModelHandle, clean: Batch, corrupt: Batch, answers: torch.Tensor,
                   variants: Sequence[Collection[Component]], ablation: str = "mean", seed: int = 0, *,
                   max_tokens: int = 4096, progress: Progress | None = None) -> SweepNumbers:
    """``ModelHandle.ablation_sweep`` here: one recorded clean pass, the corrupted activations, batched variants."""
    check_pairs(clean, corrupt)
    run = record(handle, clean)
    values = replacement(ablation, capture(handle, corrupt), len(clean.lengths), seed)
    finals = run_variants(handle, run, values, variants, max_tokens=max_tokens, progress=progress)
    n = len(clean.lengths)

    def mean_diff(final: torch.Tensor) -> np.ndarray:  # [v, n, d] -> [v]
        v = final.shape[0]
        with torch.inference_mode():
            logits = handle.token_logits(final.reshape(v * n, -1), answers.repeat(v, 1))
        return (logits[:, 0] - logits[:, 1]).reshape(v, n).mean(1).cpu().numpy()

    return SweepNumbers(full=float(mean_diff(run.final.unsqueeze(0))[0]), ablated=mean_diff(finals))
