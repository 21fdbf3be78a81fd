"""The lens's metrics for every layer of one batch: the fused scan, or the general path (logits a few layers
at a time) for soft-capped, scaled, quantized or low-precision unembeddings."""

from __future__ import annotations

import math

import torch

from core.lens.energy import energy_of
from core.lens.scan import _EXP_FLOOR, _decode_fused, _linear_unembedding, _rowdot

LN2 = math.log(2.0)
# Floats of logits decoded at once (layers x prompts x positions x vocab): 256 MB in float32, plus as
# much for exp. The unembedding GEMM needs a few hundred rows to run near full speed on a CPU
# (measured on Gemma 3's 262k x 640: 64 rows at 49 GFLOP/s, 256 rows at 71).
_LOGIT_BUDGET = 64 * 2**20


_RANK_COLUMNS = 8192  # vocabulary columns compared against every target at once (stays in cache)


def _ranks(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """1 + how many tokens have a higher logit than each target: [..., V] and [..., T] -> [..., T].

    One pass over the logits for all targets: each block of columns is compared with every target
    while it is in cache, instead of one full pass per target."""
    counts = torch.zeros(target_logits.shape, dtype=torch.int64, device=logits.device)
    thresholds = target_logits.unsqueeze(-2)  # [..., 1, T]
    for start in range(0, logits.shape[-1], _RANK_COLUMNS):
        block = logits[..., start : start + _RANK_COLUMNS].unsqueeze(-1)  # [..., C, 1]
        counts += (block > thresholds).sum(-2)
    return counts + 1


@torch.inference_mode()
def _decode_all(handle, residual, top_k, targets, token_sets, energy) -> dict:
    """Metrics for every layer of one batch's residuals [layer, b, slot, d] (numpy out).

    Works on logits L directly: with lse = log Σ exp L and p = exp(L - lse),
    entropy = lse - Σ p L and KL(final ‖ layer) = Σ p_f (L_f - L) - (lse_f - lse) Σ p_f.
    The final layer's logits and lse are the very tensors the last layer produces, and its own
    KL is 0 by definition, so the last layer is exactly the model on every CPU and BLAS.
    A float32 linear unembedding (``_linear_unembedding``) takes the fused pass (``_decode_fused``); otherwise
    per chunk of layers the logits get one top-k, one exp (into one buffer reused by every chunk: a fresh
    vocabulary-sized tensor costs its page faults, about 0.1 s per 256 MB here), one sum and one dot
    product; the chunk holding the last layer goes first. Top-k of L is top-k of p.
    """
    n_layers, b, slots, _ = residual.shape
    per_layer = max(1, _LOGIT_BUDGET // max(1, b * slots * handle.vocab_size))
    target_ids = None if targets is None else torch.tensor([list(map(int, t)) for t in targets], dtype=torch.long)
    set_index = None
    if token_sets is not None:
        set_index = [[torch.tensor(sorted(map(int, s)), dtype=torch.long) for s in sets] for sets in token_sets]
    linear = _linear_unembedding(handle)
    if linear is not None:
        result = {k: v.cpu().numpy() for k, v in _decode_fused(handle, linear, residual, top_k, target_ids, set_index).items()}
        for key in ("target_probs", "target_ranks", "set_probs"):
            result.setdefault(key, None)
        result["energy"] = energy_of(handle, residual).numpy() if energy else None
        return result
    exp_buffer = torch.empty(0, device=residual.device)
    ranges = [(start, min(start + per_layer, n_layers)) for start in range(0, n_layers, per_layer)]
    final = None  # what every other layer's KL needs of the last layer
    chunks: dict[int, dict] = {}
    for start, stop in ranges[-1:] + ranges[:-1]:  # the chunk holding the last layer first: it is every KL's reference
        logits = handle.decode(residual[start:stop])  # [l, b, slot, V]
        top = logits.topk(top_k, dim=-1)
        peak = top.values[..., :1]  # the max logit, from top-k: no separate pass for the shift
        if exp_buffer.numel() < logits.numel():
            exp_buffer = torch.empty(logits.numel(), device=logits.device)
        e = exp_buffer[: logits.numel()].view(logits.shape)
        torch.sub(logits, peak, out=e).clamp_min_(_EXP_FLOOR).exp_()
        total = e.sum(-1)
        lse = peak.squeeze(-1) + total.log()  # [l, b, slot]
        expected_logit = _rowdot(e, logits) / total  # Σ p L
        if final is None:
            p_f = e[-1] / total[-1, ..., None]
            final = {"p_total": p_f.sum(-1), "lse": lse[-1].clone(), "logits": logits[-1].clone(), "p_f": p_f.clone()}
        diff = torch.empty_like(final["logits"])
        kl = torch.stack([
            _rowdot(final["p_f"], torch.sub(final["logits"], layer_logits, out=diff))
            - (final["lse"] - layer_lse) * final["p_total"]
            for layer_logits, layer_lse in zip(logits, lse)
        ])
        if stop == n_layers:
            kl[-1] = 0.0  # KL(final ‖ final), exactly
        chunk = {"entropy_bits": ((lse - expected_logit) / LN2).clamp_min(0),
                 "kl_to_final_bits": (kl / LN2).clamp_min(0),
                 "top_ids": top.indices, "top_probs": (top.values - lse.unsqueeze(-1)).exp()}
        if target_ids is not None:
            idx = target_ids.to(logits.device)[None, :, None, :].expand(logits.shape[0], -1, slots, -1)
            target_logits = logits.gather(-1, idx)
            chunk["target_probs"] = (target_logits - lse.unsqueeze(-1)).exp()
            chunk["target_ranks"] = _ranks(logits, target_logits)
        if set_index is not None:
            p_scale = 1.0 / total  # p = e / total
            chunk["set_probs"] = torch.stack(
                [
                    torch.stack(
                        [e[:, row, :, ids.to(e.device)].sum(-1) * p_scale[:, row] if len(ids)
                         else e.new_zeros(e.shape[0], slots) for ids in sets],
                        dim=-1,
                    )
                    for row, sets in enumerate(set_index)
                ],
                dim=1,
            )
        chunks[start] = chunk
        del logits, e
    result = {}
    for key in ("top_ids", "top_probs", "entropy_bits", "kl_to_final_bits", "target_probs", "target_ranks", "set_probs"):
        parts = [chunks[start][key] for start, _ in ranges if key in chunks[start]]
        result[key] = torch.cat(parts).cpu().numpy() if parts else None
    result["energy"] = energy_of(handle, residual).numpy() if energy else None
    return result
