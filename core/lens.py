"""The logit lens: decode the residual stream after every layer through the final norm and unembedding.

One forward pass per batch of prompts captures the residual stream at the requested
positions only; logits are computed for those positions and a few layers at a time, so
memory stays at O(layers_per_chunk x prompts x positions x vocab). Layer 0 is the
embeddings, layer n_layers is the model's own output: its distribution equals the model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Sequence

import numpy as np
import torch

from core.cache import PerModel
from core.errors import UserError
from core.lenses.base import Lens, LogitLens
from core.models.handle import Batch, ModelHandle
from core.tokens import token_str
from core.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

LN2 = math.log(2.0)
# Floats of logits decoded at once (layers x prompts x positions x vocab): 256 MB in float32, plus as
# much for exp. The unembedding GEMM needs a few hundred rows to run near full speed on a CPU
# (measured on Gemma 3's 262k x 640: 64 rows at 49 GFLOP/s, 256 rows at 71).
_LOGIT_BUDGET = 64 * 2**20


@dataclass
class LensResult:
    """Per layer x prompt x position: what the lens reads off the residual stream.

    Arrays are indexed [layer, prompt, slot, ...]; ``positions[p][slot]`` is the token position
    (0-based within prompt p) that a slot decodes, and ``slot_mask[p, slot]`` is False for
    padding slots when prompts asked for different numbers of positions.
    """

    model: str
    n_layers: int
    lens: str  # "logit" | "tuned"
    sites: list[tuple[int, str]] | None  # per row (block, "embed"|"attn"|"mlp") when sub-layer rows were decoded
    tokens: list[list[str]]  # each prompt's tokens, as text
    token_ids: list[list[int]]
    positions: list[list[int]]
    slot_mask: np.ndarray  # [prompt, slot] bool
    top_ids: np.ndarray  # [layer, prompt, slot, k] int64
    top_tokens: list  # same nesting as top_ids, token text
    top_probs: np.ndarray  # [layer, prompt, slot, k]
    entropy_bits: np.ndarray  # [layer, prompt, slot]
    kl_to_final_bits: np.ndarray  # [layer, prompt, slot], KL(final || layer)
    target_probs: np.ndarray | None = None  # [layer, prompt, slot, target]
    target_ranks: np.ndarray | None = None  # [layer, prompt, slot, target], 1 = top
    set_probs: np.ndarray | None = None  # [layer, prompt, slot, set]: probability mass of each token set
    energy: np.ndarray | None = None  # [layer, prompt, slot]
    extras: dict = field(default_factory=dict)

    @property
    def layers(self) -> range:
        """Row indices: layers 0..n_layers, or 0..2·n_layers with sub-layer rows."""
        return range(len(self.top_ids))

    def layers_json(self, prompt: int = 0, slot: int = 0) -> list[dict]:
        """The CLI contract's "layers" list for one prompt and position (with sub-layer rows, each has a "site")."""
        return [
            {
                "layer": self.layer_of(layer),
                **({"site": self.sites[layer][1]} if self.sites else {}),
                "top": [
                    {"token": tok, "id": int(i), "prob": float(p)}
                    for tok, i, p in zip(
                        self.top_tokens[layer][prompt][slot],
                        self.top_ids[layer, prompt, slot],
                        self.top_probs[layer, prompt, slot],
                    )
                ],
                "entropy_bits": float(self.entropy_bits[layer, prompt, slot]),
                "kl_to_final_bits": float(self.kl_to_final_bits[layer, prompt, slot]),
            }
            for layer in self.layers
        ]

    def layer_of(self, row: int) -> int:
        """The layer (block) number of a row: the row itself, or its block with sub-layer rows."""
        return self.sites[row][0] if self.sites else row

    def row_label(self, row: int) -> str:
        """How charts name a row: "12", or "12 attn" / "12 mlp" / "0 embed" with sub-layer rows."""
        return f"{self.sites[row][0]} {self.sites[row][1]}" if self.sites else str(row)

    def tracked_json(self, names: Sequence[str], prompt: int = 0, slot: int = 0) -> list[dict]:
        """The CLI's "tracked" list: per tracked target (``targets`` of ``run_lens``), prob and rank at every row."""
        if self.target_probs is None:
            return []
        out = []
        for t, name in enumerate(names):
            out.append({
                "token": name,
                "id": int(self.extras["target_ids"][prompt][t]),
                "layers": [
                    {"layer": self.layer_of(row), **({"site": self.sites[row][1]} if self.sites else {}),
                     "prob": float(self.target_probs[row, prompt, slot, t]),
                     "rank": int(self.target_ranks[row, prompt, slot, t])}
                    for row in self.layers
                ],
            })
        return out

    def frame(self, prompt: int = 0) -> pd.DataFrame:
        """Long table for one prompt: one row per (row, position, rank).

        Columns: row, layer, site ("embed", "block", or with sub-layer rows "attn"/"mlp"), position,
        input_token, rank, token, token_id, prob, entropy_bits, kl_to_final_bits.
        """
        rows = []
        for layer in self.layers:
            for slot, position in enumerate(self.positions[prompt]):
                for rank, (tok, tid, p) in enumerate(
                    zip(
                        self.top_tokens[layer][prompt][slot],
                        self.top_ids[layer, prompt, slot],
                        self.top_probs[layer, prompt, slot],
                    ),
                    start=1,
                ):
                    rows.append(
                        (
                            layer,
                            self.layer_of(layer),
                            self.sites[layer][1] if self.sites else ("embed" if layer == 0 else "block"),
                            position,
                            self.tokens[prompt][position],
                            rank,
                            tok,
                            int(tid),
                            float(p),
                            float(self.entropy_bits[layer, prompt, slot]),
                            float(self.kl_to_final_bits[layer, prompt, slot]),
                        )
                    )
        import pandas as pd  # here, not at start-up: pandas costs a CLI run ~0.4 s

        return pd.DataFrame(
            rows,
            columns=[
                "row", "layer", "site", "position", "input_token", "rank", "token", "token_id", "prob",
                "entropy_bits", "kl_to_final_bits",
            ],
        )


def _slot_index(batch: Batch, positions, lengths: list[int]) -> tuple[torch.Tensor, list[list[int]], np.ndarray]:
    """Padded-batch indices [prompt, slot] for the requested positions, with their 0-based positions."""
    per_prompt: list[list[int]] = []
    for row, length in enumerate(lengths):
        if isinstance(positions, str):
            if positions != "all":
                raise UserError(f"positions must be 'all' or a list of integers, got '{positions}'")
            wanted = list(range(length))
        else:
            wanted = []
            for p in positions:
                batch.padded_index(row, int(p))  # validates the range
                wanted.append(int(p) % length)
        per_prompt.append(wanted)
    width = max(len(w) for w in per_prompt)
    if width == 0:
        raise UserError("no positions to decode: give at least one position")
    index = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = np.zeros((len(lengths), width), dtype=bool)
    for row, wanted in enumerate(per_prompt):
        pad = batch.input_ids.shape[1] - lengths[row]
        padded = [pad + p for p in wanted] + [pad + wanted[-1]] * (width - len(wanted))
        index[row] = torch.tensor(padded)
        mask[row, : len(wanted)] = True
    return index, per_prompt, mask


_GRAMS = PerModel()


def sublayer_sites(n_layers: int) -> list[tuple[int, str]]:
    """(layer, site) of each of the 2L+1 sub-layer rows: (0, "embed"), then (ℓ, "attn"), (ℓ, "mlp") for blocks
    ℓ = 1..L (the residual after block ℓ's attention, after its MLP = layer ℓ's row)."""
    return [(0, "embed")] + [(layer, site) for layer in range(1, n_layers + 1) for site in ("attn", "mlp")]


def unembedding_gram(handle: ModelHandle) -> tuple[torch.Tensor, float]:
    """(M, denominator) for the energy: M = ŨᵀŨ / V with Ũ_i = γ⊙u_i / ‖γ⊙u_i‖.

    mean_i (Ũ_i·ĥ)² = ĥᵀ M ĥ and mean_{i,j} (Ũ_i·Ũ_j)² = ‖ŨᵀŨ‖_F² / V², so neither needs a V×V matrix.
    """
    def compute():
        with torch.inference_mode():
            weight = handle.adapter.unembed(handle.model).weight
            u = weight.detach().float().cpu() * handle.adapter.norm_weight(handle.model).cpu()
            norms = u.norm(dim=-1, keepdim=True)
            u = u[norms[:, 0] > 0] / norms[norms[:, 0] > 0]  # all-zero rows (padding) are no direction
            gram = u.T @ u
            vocab = u.shape[0]
            return gram / vocab, math.sqrt(float((gram**2).sum())) / vocab

    return _GRAMS.get(handle.model, "unembedding_gram", compute)


def energy_of(handle: ModelHandle, residual: torch.Tensor) -> torch.Tensor:
    """Energy of residual vectors [..., d_model] against the unembedding (Wendler et al. 2024)."""
    gram, denominator = unembedding_gram(handle)
    h = residual.float().cpu()
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.sqrt(torch.einsum("...i,ij,...j->...", h, gram, h).clamp_min(0)) / denominator


def checked_request(handle: ModelHandle, prompts, top_k: int, targets, token_sets, batch_size: int = 1) -> list[str]:
    """The prompts as a list, after the checks every lens engine makes (one ``UserError`` naming what to fix)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise UserError("no prompt given: type at least one prompt")
    if not 1 <= top_k <= min(1000, handle.vocab_size):
        raise UserError(f"top-k must be between 1 and {min(1000, handle.vocab_size)}, got {top_k}")
    if batch_size < 1:
        raise UserError("batch size must be at least 1")
    for name, per_prompt in (("targets", targets), ("token_sets", token_sets)):
        if per_prompt is not None and (len(per_prompt) != len(prompts) or len({len(x) for x in per_prompt}) > 1):
            raise UserError(f"{name} must give the same number of entries for each of the {len(prompts)} prompts")
    for per_prompt in targets or []:
        for t in per_prompt:
            if not 0 <= int(t) < handle.vocab_size:
                raise UserError(f"target token id {t} is outside the vocabulary (0..{handle.vocab_size - 1})")
    return prompts


def run_lens(
    handle: ModelHandle,
    prompts: str | Sequence[str],
    *,
    positions: Sequence[int] | str = (-1,),
    top_k: int = 10,
    targets: Sequence[Sequence[int]] | None = None,
    token_sets: Sequence[Sequence[Collection[int]]] | None = None,
    energy: bool = False,
    batch_size: int = 16,
    progress: Progress | None = None,
    lens: Lens | None = None,
    sublayer: bool = False,
) -> LensResult:
    """Decode every layer at ``positions`` of every prompt.

    ``targets[p]`` are token ids whose probability and rank are tracked for prompt p;
    ``token_sets[p]`` are sets of ids whose total probability is tracked (e.g. a word's set).
    Every prompt must give the same number of targets and of sets. ``lens`` reads the residual
    (default: the logit lens); ``sublayer`` decodes 2L+1 rows (embeddings, then after each block's
    attention and after its MLP; ``LensResult.sites`` names them) instead of L+1.
    """
    lens = lens or LogitLens()
    if sublayer and not lens.reads_sublayers:
        raise UserError(f"the {lens.name} lens reads whole layers only: use the logit lens for sub-layer rows")
    prompts = checked_request(handle, prompts, top_k, targets, token_sets, batch_size)

    tokenizer = handle.tokenizer
    chunks = []
    for start in range(0, len(prompts), batch_size):
        batch_prompts = prompts[start : start + batch_size]
        batch = handle.encode(batch_prompts)
        index, wanted, mask = _slot_index(batch, positions, batch.lengths)
        residual = lens.transform(handle.residuals(batch, index, sublayer=sublayer))  # [row, b, slot, d]
        sl = slice(start, start + len(batch_prompts))
        chunks.append(
            _decode_all(
                handle, residual, top_k,
                None if targets is None else targets[sl],
                None if token_sets is None else token_sets[sl],
                energy,
            )
            | {"batch": batch, "wanted": wanted, "mask": mask}
        )
        if progress:
            progress(min(1.0, (start + len(batch_prompts)) / len(prompts)), f"{start + len(batch_prompts)}/{len(prompts)} prompts")

    width = max(c["mask"].shape[1] for c in chunks)

    def cat(key, axis=1):
        parts = [c[key] for c in chunks]
        if parts[0] is None:
            return None
        padded = []
        for part in parts:
            pad = width - part.shape[2]
            if pad:
                widths = [(0, 0)] * part.ndim
                widths[2] = (0, pad)
                part = np.pad(part, widths, mode="edge")
            padded.append(part)
        return np.concatenate(padded, axis=axis)

    token_ids, tokens, positions_out, masks = [], [], [], []
    for c in chunks:
        batch = c["batch"]
        for row, length in enumerate(batch.lengths):
            ids = batch.input_ids[row, batch.input_ids.shape[1] - length :].tolist()
            token_ids.append(ids)
            tokens.append([token_str(tokenizer, t) for t in ids])
        positions_out += c["wanted"]
        masks.append(np.pad(c["mask"], [(0, 0), (0, width - c["mask"].shape[1])]))
    top_ids = cat("top_ids")
    top_tokens = [
        [[[token_str(tokenizer, t) for t in slot] for slot in prompt] for prompt in layer] for layer in top_ids
    ]
    return LensResult(
        model=handle.spec,
        n_layers=handle.n_layers,
        lens=lens.name,
        sites=sublayer_sites(handle.n_layers) if sublayer else None,
        tokens=tokens,
        token_ids=token_ids,
        positions=positions_out,
        slot_mask=np.concatenate(masks, axis=0),
        top_ids=top_ids,
        top_tokens=top_tokens,
        top_probs=cat("top_probs"),
        entropy_bits=cat("entropy_bits"),
        kl_to_final_bits=cat("kl_to_final_bits"),
        target_probs=cat("target_probs"),
        target_ranks=cat("target_ranks"),
        set_probs=cat("set_probs"),
        energy=cat("energy"),
        extras={} if targets is None else {"target_ids": [list(map(int, t)) for t in targets]},
    )


def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_v x[..., v] * y[..., v] as one batched GEMV, without a vocabulary-sized temporary."""
    v = x.shape[-1]
    return torch.bmm(x.reshape(-1, 1, v), y.reshape(-1, v, 1)).reshape(x.shape[:-1])


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


def _linear_unembedding(handle: ModelHandle):
    """(norm, weight, bias) when logits are exactly ``norm(h) @ Wᵀ + b`` in float32 (no soft cap), else None.

    Then Σ_v q_v L_v(h) = norm(h) · (Wᵀq) + q·b for any distribution q: a d_model-sized dot product per
    row instead of a pass over the vocabulary."""
    unembed = handle.adapter.unembed(handle.model)
    weight = getattr(unembed, "weight", None)
    if (handle.adapter.softcap(handle.model) or not isinstance(unembed, torch.nn.Linear) or weight is None
            or weight.dtype != torch.float32):
        return None
    return handle.adapter.final_norm(handle.model), weight, unembed.bias


_EXP_FLOOR = -60.0  # exp(L - max) below e^-60 is 0 in a float32 sum, and exp's denormal results run ~40x slower


def _onednn_mm(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``rows @ weightᵀ`` by oneDNN's matmul (the op PyTorch's own compiler emits for CPU linears).

    On the AMD EPYC machine of 2026-12-02 it ran 1.3-1.8x faster than ``torch.mm`` (MKL) for the scan's shapes
    (304-1024 rows x 640 x 4096 columns: 118-128 against 69-81 GFLOP/s), and equally fast elsewhere; the
    results agree to float32 rounding (the same sums in another order)."""
    return torch.ops.mkldnn._linear_pointwise(rows, weight, None, "none", [], "")


def _block_logits(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``rows @ weightᵀ`` for the fused scan: oneDNN for float32 on a CPU that has it, else ``torch.mm``.

    Also Σ exp·W of the final rows, ``e @ W[block]`` (``weight`` = W[block]ᵀ, a view): 16 x 4096 x 640 in
    1.5 ms against 2.9 ms by ``@``."""
    if (_ONEDNN and type(rows) is type(weight) is torch.Tensor and rows.device.type == "cpu"
            and rows.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled()):  # no derivative
        return _onednn_mm(rows, weight)
    return torch.mm(rows, weight.T)


def _onednn_works() -> bool:
    """Whether this build has oneDNN's matmul, decided once (so the same inputs always take the same path)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.equal(_onednn_mm(torch.ones(2, 3), torch.ones(4, 3)), torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


_ONEDNN = _onednn_works()

_SCAN_COLUMNS = 4096  # vocabulary columns per block of the fused scan: the block's logits stay in cache
_SCAN_ROWS = 1024  # residual rows per scan (layers x prompts x positions): the GEMM's M


def _scan(linear, rows: torch.Tensor, top_k: int, final: slice | None, targets: torch.Tensor | None) -> dict:
    """The lens's metrics for normalised residual rows [M, d], in one pass over the vocabulary in blocks.

    Each block of logits (``rows @ W[block]ᵀ``, [M, 4096]) is used while it is in cache and then dropped:
    running max and Σ exp (online softmax, rescaled when the max grows), Σ exp·L for the entropy, the block's
    top-k (merged at the end), target ranks, and for the ``final`` rows Σ exp·W (→ Wᵀp_f for every KL).
    No vocabulary-sized tensor is ever allocated. ``targets`` [M, T]: ids whose logits (computed apart, with
    the target's own column left out of its rank) are tracked.
    """
    _, weight, bias = linear
    m_rows, vocab = rows.shape[0], weight.shape[0]
    peak = torch.full((m_rows,), -math.inf, device=rows.device)
    total = torch.zeros(m_rows, device=rows.device)
    weighted = torch.zeros(m_rows, device=rows.device)  # Σ exp(L - peak) · L
    tops, top_ids = [], []
    n_final = 0 if final is None else final.stop - final.start
    w_acc = torch.zeros(n_final, weight.shape[1], device=rows.device)
    b_acc = torch.zeros(n_final, device=rows.device)
    if targets is not None:
        target_logits = torch.einsum("md,mtd->mt", rows, weight[targets].float())
        if bias is not None:
            target_logits = target_logits + bias.float()[targets]
        counts = torch.zeros(targets.shape, dtype=torch.int64, device=rows.device)
    for start in range(0, vocab, _SCAN_COLUMNS):
        w_block = weight[start : start + _SCAN_COLUMNS]
        block = _block_logits(rows, w_block)  # [M, C]
        if bias is not None:
            block += bias[start : start + _SCAN_COLUMNS].float()
        top = block.topk(min(top_k, block.shape[1]), dim=-1)
        tops.append(top.values)
        top_ids.append(top.indices + start)
        new_peak = torch.maximum(peak, top.values[:, 0])
        scale = torch.exp(peak - new_peak)  # 0 at the first block (peak = -inf)
        e = torch.sub(block, new_peak[:, None]).clamp_min_(_EXP_FLOOR).exp_()
        total = total * scale + e.sum(-1)
        weighted = weighted * scale + _rowdot(e, block)
        if n_final:
            e_f = e[final]
            w_acc = w_acc * scale[final, None] + _block_logits(e_f, w_block.T)  # e_f @ W[block]
            if bias is not None:
                b_acc = b_acc * scale[final] + e_f @ bias[start : start + _SCAN_COLUMNS].float()
        if targets is not None:
            counts += (block.unsqueeze(-1) > target_logits.unsqueeze(1)).sum(1)
            local = targets - start
            inside = (local >= 0) & (local < block.shape[1])
            own = block.gather(1, local.clamp(0, block.shape[1] - 1))
            counts -= (inside & (own > target_logits)).long()  # the target's own column never outranks it
        peak = new_peak
    values, where = torch.cat(tops, -1).topk(top_k, dim=-1)
    lse = peak + total.log()
    out = {"top_values": values, "top_ids": torch.cat(top_ids, -1).gather(-1, where), "lse": lse,
           "expected": weighted / total}
    if n_final:
        out["w_bar"] = w_acc / total[final, None]
        out["b_bar"] = b_acc / total[final] if bias is not None else 0.0
    if targets is not None:
        out["target_probs"] = (target_logits - lse[:, None]).exp()
        out["target_ranks"] = counts + 1
    return out


def _decode_fused(handle, linear, residual, top_k, target_ids, set_index) -> dict:
    """``_decode_all`` for a float32 linear unembedding, by ``_scan``: every layer of one batch [layer, b, slot, d]."""
    norm, weight, bias = linear
    n_layers, b, slots, d = residual.shape
    per_layer = max(1, min(n_layers, _SCAN_ROWS // max(1, b * slots)))
    ranges = [(start, min(start + per_layer, n_layers)) for start in range(0, n_layers, per_layer)]
    chunks, final = {}, None
    for start, stop in ranges[-1:] + ranges[:-1]:  # the chunk holding the last layer first: every KL's reference
        hn = norm(residual[start:stop].to(weight.device)).float()  # [l, b, slot, d]
        rows = hn.reshape(-1, d)
        l = stop - start
        last = slice((l - 1) * b * slots, l * b * slots) if final is None else None
        targets = None
        if target_ids is not None:
            targets = target_ids.to(rows.device)[None, :, None, :].expand(l, -1, slots, -1).reshape(l * b * slots, -1)
        scan = _scan(linear, rows, top_k, last, targets)
        shape = (l, b, slots)
        lse = scan["lse"].view(shape)
        if final is None:
            w_bar = scan["w_bar"].view(b, slots, d)
            b_bar = scan["b_bar"] if bias is None else scan["b_bar"].view(b, slots)
            final = {"w_bar": w_bar, "b_bar": b_bar, "lse": lse[-1].clone(),
                     "expected": (hn[-1] * w_bar).sum(-1) + b_bar}
        under_final = (hn * final["w_bar"]).sum(-1) + final["b_bar"]  # Σ p_f L
        kl = (final["expected"] - under_final) - (final["lse"] - lse)
        if stop == n_layers:
            kl[-1] = 0.0  # KL(final ‖ final), exactly
        chunk = {"entropy_bits": ((lse - scan["expected"].view(shape)) / LN2).clamp_min(0),
                 "kl_to_final_bits": (kl / LN2).clamp_min(0),
                 "top_ids": scan["top_ids"].view(*shape, -1),
                 "top_probs": (scan["top_values"].view(*shape, -1) - lse.unsqueeze(-1)).exp()}
        if targets is not None:
            chunk["target_probs"] = scan["target_probs"].view(*shape, -1)
            chunk["target_ranks"] = scan["target_ranks"].view(*shape, -1)
        if set_index is not None:
            chunk["set_probs"] = _set_probs(linear, hn, lse, set_index)
        chunks[start] = chunk
    return {key: torch.cat([chunks[s][key] for s, _ in ranges]) for key in chunks[ranges[0][0]]}


def _set_probs(linear, hn: torch.Tensor, lse: torch.Tensor, set_index) -> torch.Tensor:
    """Σ_{v∈S} p_v per prompt's token sets [l, b, slot, set], from the sets' own logits (a GEMM over their ids)."""
    _, weight, bias = linear
    l, b, slots, _ = hn.shape
    out = torch.zeros(l, b, slots, max(len(sets) for sets in set_index), device=hn.device)
    for row, sets in enumerate(set_index):
        ids = [i for s in sets for i in s.tolist()]
        if not ids:
            continue
        ids_t = torch.tensor(ids, dtype=torch.long, device=weight.device)
        logits = hn[:, row] @ weight[ids_t].float().T  # [l, slot, n]
        if bias is not None:
            logits = logits + bias.float()[ids_t]
        p = (logits - lse[:, row, :, None]).exp()
        at = 0
        for j, s in enumerate(sets):
            out[:, row, :, j] = p[..., at : at + len(s)].sum(-1)
            at += len(s)
    return out


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
