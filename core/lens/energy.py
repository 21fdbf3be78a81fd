"""The energy of residual vectors against the unembedding (Wendler et al. 2024), from a d x d Gram matrix."""

from __future__ import annotations

import math

import torch

from core.models.handle import ModelHandle


def unembedding_gram(handle: ModelHandle) -> tuple[torch.Tensor, float]:
    """(M, denominator) for the energy: M = ŨᵀŨ / V with Ũ_i = γ⊙u_i / ‖γ⊙u_i‖.

    mean_i (Ũ_i·ĥ)² = ĥᵀ M ĥ and mean_{i,j} (Ũ_i·Ũ_j)² = ‖ŨᵀŨ‖_F² / V², so neither needs a V×V matrix.
    """
    def compute():
        with torch.inference_mode():
            u = handle.weights.unembedding().float().cpu() * handle.weights.final_norm_gamma().cpu()
            norms = u.norm(dim=-1, keepdim=True)
            u = u[norms[:, 0] > 0] / norms[norms[:, 0] > 0]  # all-zero rows (padding) are no direction
            gram = u.T @ u
            vocab = u.shape[0]
            return gram / vocab, math.sqrt(float((gram**2).sum())) / vocab

    return handle.cached("unembedding_gram", compute)


def energy_of(handle: ModelHandle, residual: torch.Tensor) -> torch.Tensor:
    """Energy of residual vectors [..., d_model] against the unembedding (Wendler et al. 2024)."""
    gram, denominator = unembedding_gram(handle)
    h = residual.float().cpu()
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.sqrt(torch.einsum("...i,ij,...j->...", h, gram, h).clamp_min(0)) / denominator
