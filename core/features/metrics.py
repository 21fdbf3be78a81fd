"""How good a dictionary is: FVU, L0, dead latents, and the loss-based scores (ΔCE, loss recovered).

The caller chooses the tokens (drop BOS first: its residual is huge and would dominate FVU).
"""

from __future__ import annotations

import torch
from torch import Tensor


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained, Σ‖x − x̂‖² / Σ‖x − x̄‖², over tokens x, x_hat [..., d] (x̄: their mean)."""
    meter = FVUMeter()
    meter.update(x, x_hat)
    return meter.value


class FVUMeter:
    """FVU accumulated over batches in float64, so held-out activations can stream."""

    def __init__(self):
        self.n = 0
        self.error = 0.0  # Σ‖x − x̂‖²
        self.sum: Tensor | None = None  # Σx [d]
        self.sum_sq = 0.0  # Σ‖x‖²

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add tokens x, x_hat [..., d]."""
        if x.shape != x_hat.shape:
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ in shape")
        x = x.detach().reshape(-1, x.shape[-1]).double()
        x_hat = x_hat.detach().reshape(-1, x.shape[-1]).to(x)
        self.n += x.shape[0]
        self.error += float((x - x_hat).pow(2).sum())
        self.sum = x.sum(0) if self.sum is None else self.sum + x.sum(0)
        self.sum_sq += float(x.pow(2).sum())

    @property
    def value(self) -> float:
        """Σ‖x − x̂‖² / (Σ‖x‖² − n‖x̄‖²); nan with no variance."""
        if self.n == 0 or self.sum is None:
            return float("nan")
        variance = self.sum_sq - float(self.sum.pow(2).sum()) / self.n
        return self.error / variance if variance > 0 else float("nan")


def l0(acts: Tensor) -> float:
    """Mean number of active (non-zero) latents per token, acts [..., width]."""
    return float((acts != 0).sum(-1).double().mean())


def fired(acts: Tensor) -> Tensor:
    """Which latents are active on at least one token: acts [..., width] -> bool [width]."""
    return (acts != 0).reshape(-1, acts.shape[-1]).any(0)


def dead_fraction(acts_or_fired: Tensor) -> float:
    """Fraction of latents never active: from acts [..., width] or from a bool ``fired`` mask [width]."""
    mask = acts_or_fired if acts_or_fired.dtype == torch.bool and acts_or_fired.ndim == 1 else fired(acts_or_fired)
    return float((~mask).double().mean())


def delta_ce(loss_clean_nats: float, loss_spliced_nats: float) -> float:
    """ΔCE: next-token cross-entropy with the reconstruction spliced in minus the clean one (nats; ≥ 0 usually)."""
    return loss_spliced_nats - loss_clean_nats


def loss_recovered(loss_clean_nats: float, loss_spliced_nats: float, loss_zero_nats: float) -> float:
    """(L_zero − L_spliced) / (L_zero − L_clean): 1 = as good as the model, 0 = as bad as zero-ablating the site."""
    if loss_zero_nats == loss_clean_nats:
        raise ValueError("zero-ablating the site does not change the loss, so loss recovered is undefined")
    return (loss_zero_nats - loss_spliced_nats) / (loss_zero_nats - loss_clean_nats)
