"""``run_lens``: one forward pass per batch captures the residual stream at the requested positions only; every
layer is decoded through the model's own final norm and unembedding (``core.lens.decode``)."""

from __future__ import annotations

from typing import Collection, Sequence

import numpy as np
import torch

from core.errors import UserError
from core.lens.decode import _decode_all
from core.lens.result import LensResult
from core.lenses.base import Lens, LogitLens
from core.models.handle import Batch, ModelHandle
from core.progress import Progress
from core.tokens import token_str


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


def sublayer_sites(n_layers: int) -> list[tuple[int, str]]:
    """(layer, site) of each of the 2L+1 sub-layer rows: (0, "embed"), then (ℓ, "attn"), (ℓ, "mlp") for blocks
    ℓ = 1..L (the residual after block ℓ's attention, after its MLP = layer ℓ's row)."""
    return [(0, "embed")] + [(layer, site) for layer in range(1, n_layers + 1) for site in ("attn", "mlp")]


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
    if handle.reductions_only:  # NDIF: the lens is reduced where the model runs, only its numbers come back
        return handle.reduced_lens(prompts, positions=positions, top_k=top_k, targets=targets, token_sets=token_sets,
                                   energy=energy, batch_size=batch_size, progress=progress, lens=lens, sublayer=sublayer)
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
