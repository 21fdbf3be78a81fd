"""Which reconstruction errors matter: a per-dimension weighting of the dictionary's output, folded into its weights.

Plain MSE spends a dictionary's capacity where the activation varies most. In Gemma's residual stream one
dimension carries over half of the variance (a massive, nearly constant activation) while the dimensions the
next-token loss is most sensitive to vary least: at layer 9 of Gemma 3 270M the log-variance and the
log-sensitivity of the 640 dimensions correlate at −0.85, and an SAE with FVU 0.2 costs 2.7 nats. So the trainer
sees the output centred and scaled per dimension, (y − μ) ⊙ s, with

    s_j² = 1 / Σ_i var_i  +  λ · F_j / Σ_i F_i var_i

F_j = E[(∂ loss / ∂ y_j)²], the diagonal of the empirical Fisher information of the next-token loss at the site
(BOS excluded), from one forward and backward pass per calibration batch (``handle.gradients``); var and μ from
the calibration tokens. The first term is plain FVU, the second a Fisher-weighted FVU (to second order, what
ΔCE measures); λ balances them. The scaling is folded back exactly (``fold``): the saved dictionary reads and
writes raw activations, its TopK choices unchanged; its decoder rows are unit-norm in the weighted metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analyses.features.wiring import Wiring, excluded, flat, kept
from core.features import Dictionary
from core.models.handle import ModelHandle
from core.progress import Progress, quiet


@dataclass
class Weighting:
    """Per-dimension centre ``mean`` and scale ``scale`` of the output site (both [d_out], float32)."""

    mean: torch.Tensor
    scale: torch.Tensor

    def apply(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean.to(y.device)) * self.scale.to(y.device)

    def fold(self, d: Dictionary, transcoder: bool) -> Dictionary:
        """The dictionary trained on weighted outputs (SAEs: weighted inputs too) as one on raw activations."""
        s, mu = self.scale, self.mean
        W_enc, b_enc = d.W_enc, d.b_enc
        if not transcoder:  # pre = ((x − μ) ⊙ s) W + b = x (diag(s) W) + (b − (μ ⊙ s) W)
            W_enc, b_enc = d.W_enc * s[:, None], d.b_enc - (mu * s) @ d.W_enc
        W_skip = d.W_skip / s[None, :] if d.W_skip is not None else None
        folded = Dictionary(W_enc=W_enc.contiguous(), b_enc=b_enc, W_dec=(d.W_dec / s[None, :]).contiguous(),
                            b_dec=d.b_dec / s + mu, threshold=d.threshold, W_skip=W_skip, activation=d.activation,
                            k=d.k, kind=d.kind, site=d.site, site_out=d.site_out, layer=d.layer, model=d.model,
                            d_model=d.d_model, info=dict(d.info))
        return folded  # thresholds compare pre-activations, which folding leaves unchanged


def identity(d_out: int) -> Weighting:
    return Weighting(torch.zeros(d_out), torch.ones(d_out))


def fisher_diagonal(handle: ModelHandle, wiring: Wiring, rows: list[list[int]], batch_rows: int = 2,
                    progress: Progress = quiet) -> tuple[torch.Tensor, torch.Tensor]:
    """(F [d_out], the output site's activations [n, d_out]) over ``rows``' positions but BOS and padding."""
    total, values = None, []
    for start in range(0, len(rows), batch_rows):
        progress(start / len(rows), f"how much each direction matters to the loss: {start}/{len(rows)} windows")
        batch = handle.batch_of(rows[start:start + batch_rows], pad="right")
        skip = excluded(handle, batch)
        ids = batch.input_ids

        def loss(final: torch.Tensor) -> torch.Tensor:  # Σ next-token cross-entropy per prompt, BOS predictions out
            out = []
            for row, length in enumerate(batch.lengths):
                keep = ~skip[row, : length - 1]
                logits = handle.decode(final[row, : length - 1][keep.to(final.device)], differentiable=True)
                targets = ids[row, 1:length][keep].to(logits.device)
                out.append((logits.logsumexp(-1) - logits.gather(1, targets[:, None])[:, 0]).sum())
            return torch.stack(out)

        got = handle.gradients(batch, [wiring.write], loss)
        grads = kept(flat(wiring.write, got.grads[wiring.write]), skip).cpu()
        squares = grads.double().pow(2).sum(0)
        total = squares if total is None else total + squares
        values.append(kept(flat(wiring.write, got.values[wiring.write]), skip).cpu())
    return total.float(), torch.cat(values)


def fisher_weighting(handle: ModelHandle, wiring: Wiring, rows: list[list[int]], weight: float,
                     progress: Progress = quiet) -> Weighting:
    """The weighting of the module docstring, from calibration ``rows``."""
    fisher, y = fisher_diagonal(handle, wiring, rows, progress=progress)
    mean, var = y.mean(0), y.var(0).clamp_min(1e-12)
    fisher = fisher / fisher.sum().clamp_min(1e-30)
    squared = 1 / var.sum() + weight * fisher / (fisher * var).sum().clamp_min(1e-30)
    return Weighting(mean, squared.sqrt())
