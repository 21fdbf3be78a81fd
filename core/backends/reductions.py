"""The lens reduced inside nnsight traces: what one NDIF request may bring back.

``lens_reductions`` decodes every layer's residual at chosen positions inside one trace and saves top-k ids
and probabilities, entropy, KL to the final layer, tracked tokens' probabilities and ranks and token-set
probabilities: never a layer x vocab tensor. ``reduced_lens`` is ``core.lens.run_lens`` on top of it (the
same ``LensResult``): the nnsight backend's ``reduced_lens`` operation, which ``run_lens`` itself calls on a
reductions-only handle, so every analysis written against ``run_lens`` runs on NDIF unchanged when what it asks
for is one of these reductions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import torch

from core.errors import UserError
from core.backends.nnsight_backend import nnsight_backend
from core.lens import LensResult, checked_request
from core.models.handle import Batch, ModelHandle
from core.tokens import token_str
from core.interventions.hooks import model_inputs
from core.progress import Progress

LN2 = float(np.log(2.0))
MAX_POSITIONS = 64  # positions decoded per prompt in one request: top-k of each comes back


@dataclass
class LensReductions:
    """The lens at chosen positions of every prompt, reduced inside the trace (layer 0 = embeddings).

    Arrays are [layer, batch, slot, ...]; slot s is ``positions[s]`` of every prompt (padded batch index).
    """

    top_ids: torch.Tensor  # [layer, batch, slot, k] int64
    top_probs: torch.Tensor  # [layer, batch, slot, k] float32
    entropy_bits: torch.Tensor  # [layer, batch, slot]
    kl_to_final_bits: torch.Tensor  # [layer, batch, slot]: KL(final || layer)
    target_probs: torch.Tensor | None = None  # [layer, batch, slot, target]
    target_ranks: torch.Tensor | None = None  # [layer, batch, slot, target], 1 = top
    set_probs: torch.Tensor | None = None  # [layer, batch, slot, set]: summed probability of each token set

    @property
    def saved_bytes(self) -> int:
        """Bytes of every tensor the trace saved (what one request brings back)."""
        return sum(t.numel() * t.element_size() for t in (self.top_ids, self.top_probs, self.entropy_bits,
                                                           self.kl_to_final_bits, self.target_probs,
                                                           self.target_ranks, self.set_probs) if t is not None)

    @property
    def token_set_probs(self) -> torch.Tensor | None:
        """``set_probs`` at the first slot: [layer, batch, set]."""
        return None if self.set_probs is None else self.set_probs[:, :, 0]


def _padded_sets(per_prompt: Sequence[Sequence[Collection[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, its token sets as (ids [batch, set, member], mask [batch, set, member]): gathered in the
    trace, so no [set, vocab] indicator is uploaded."""
    width = max([len(s) for sets in per_prompt for s in sets] + [1])
    n_sets = len(per_prompt[0])
    ids = torch.zeros(len(per_prompt), n_sets, width, dtype=torch.long)
    mask = torch.zeros(len(per_prompt), n_sets, width)
    for row, sets in enumerate(per_prompt):
        for s, members in enumerate(sets):
            members = sorted(map(int, members))
            ids[row, s, : len(members)] = torch.tensor(members, dtype=torch.long)
            mask[row, s, : len(members)] = 1.0
    return ids, mask


def lens_reductions(handle: ModelHandle, prompts: Sequence[str], top_k: int = 5,
                    token_sets: Sequence[Sequence[int]] = (), *, positions: Sequence[int] = (-1,),
                    targets: Sequence[Sequence[int]] | None = None,
                    prompt_sets: Sequence[Sequence[Collection[int]]] | None = None) -> LensReductions:
    """Decode every layer at ``positions`` (of every prompt; negative counts from the end) inside one trace
    and save only its reductions. ``token_sets``: sets shared by every prompt; ``prompt_sets[p]``: prompt p's
    own sets (the same number each); ``targets[p]``: ids whose probability and rank prompt p tracks."""
    _, layers, norm, unembed = nnsight_backend(handle).traced(handle)
    batch = handle.encode(prompts)
    return _reduce(handle, batch, layers, norm, unembed, top_k, _index(batch, positions), targets,
                   prompt_sets if prompt_sets is not None else [list(token_sets)] * len(prompts))


def _index(batch: Batch, positions: Sequence[int]) -> torch.Tensor:
    """Padded-batch indices [batch, slot] of ``positions`` (validated against each prompt's length)."""
    if len(positions) > MAX_POSITIONS:
        raise UserError(f"NDIF brings back the lens at up to {MAX_POSITIONS} positions per prompt, got {len(positions)}")
    return torch.tensor([[batch.padded_index(row, int(p)) for p in positions] for row in range(len(batch.lengths))],
                        dtype=torch.long)


def _reduce(handle, batch, layers, norm, unembed, top_k, index, targets, prompt_sets) -> LensReductions:
    cap = handle.weights.softcap
    scale = handle.weights.logit_scale
    d_model = handle.d_model
    target_ids = None if targets is None else torch.tensor([list(map(int, t)) for t in targets], dtype=torch.long)
    set_ids, set_mask = _padded_sets(prompt_sets) if prompt_sets and len(prompt_sets[0]) else (None, None)
    n_targets = 0 if target_ids is None else target_ids.shape[1]
    # Everything inside the block below is shipped to NDIF as source and run there: it reads only tensors,
    # numbers and envoys (no project function), and saves only reductions. Only saved names come back, so
    # what may not be computed is bound before the block.
    target_probs = target_ranks = set_probs = None
    backend = nnsight_backend(handle)
    with handle.lock, torch.inference_mode(), backend.remote_errors():
        with backend.trace(handle, model_inputs(handle, batch)):
            gather = index[:, :, None].expand(-1, -1, d_model)
            first = layers[0].input
            hidden = [first.gather(1, gather.to(first.device))]
            for layer in layers:
                out = layer.output
                out = out[0] if isinstance(out, tuple) else out
                hidden.append(out.gather(1, gather.to(out.device)))
            residual = torch.stack([h.to(hidden[-1].device) for h in hidden])  # [layer, batch, slot, d_model]
            logits = unembed(norm(residual)).float()  # [layer, batch, slot, vocab]: never saved
            if scale != 1.0:
                logits = logits * scale
            if cap:
                logits = torch.tanh(logits / cap) * cap
            logp = torch.log_softmax(logits, dim=-1)
            probs = logp.exp()
            top = logits.topk(top_k, dim=-1)
            top_ids = top.indices.save()
            top_probs = probs.gather(-1, top.indices).save()
            entropy = (-(probs * logp).sum(-1) / LN2).clamp_min(0).save()
            kl = ((probs[-1:] * (logp[-1:] - logp)).sum(-1) / LN2).clamp_min(0).save()
            if n_targets:
                tid = target_ids.to(logits.device)[None, :, None, :].expand(logits.shape[0], -1, logits.shape[2], -1)
                target_logits = logits.gather(-1, tid)
                target_probs = probs.gather(-1, tid).save()
                target_ranks = torch.stack([(logits > target_logits[..., t : t + 1]).sum(-1) + 1
                                            for t in range(n_targets)], dim=-1).save()
            if set_ids is not None:
                sid = set_ids.to(probs.device)
                members = sid.reshape(1, sid.shape[0], 1, -1).expand(probs.shape[0], -1, probs.shape[2], -1)
                picked = probs.gather(-1, members).reshape(*probs.shape[:3], *sid.shape[1:])
                set_probs = (picked * set_mask.to(probs.device)[None, :, None]).sum(-1).save()
    return LensReductions(top_ids, top_probs, entropy, kl, target_probs, target_ranks, set_probs)


def reduced_lens(
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
    lens=None,
    sublayer: bool = False,
):
    """``core.lens.run_lens`` from reductions only (same arguments, same ``LensResult``): the logit lens at
    chosen positions; every position, sub-layer rows, the energy and the tuned lens are one-line errors."""
    if isinstance(positions, str):
        raise UserError("NDIF brings back the lens at chosen positions only (the last by default), not at every "
                        "position: ask for a position, or use --backend local or nnsight for the whole prompt")
    if sublayer:
        raise UserError("sub-layer rows need residual streams: use --backend local for --resolution sublayer")
    if energy:
        raise UserError("the energy needs residual streams, which NDIF does not bring back: turn it off, or use "
                        "--backend local or nnsight")
    if lens is not None and lens.name != "logit":
        raise UserError(f"NDIF runs the logit lens only (the {lens.name} lens's translators stay here): use "
                        "--lens logit, or --backend local or nnsight")
    prompts = checked_request(handle, prompts, top_k, targets, token_sets, batch_size)
    _, layers, norm, unembed = nnsight_backend(handle).traced(handle)
    parts, token_ids, wanted = [], [], []
    for start in range(0, len(prompts), max(1, batch_size)):
        chunk = slice(start, start + batch_size)
        batch = handle.encode(prompts[chunk])
        index = _index(batch, positions)
        parts.append(_reduce(handle, batch, layers, norm, unembed, top_k, index,
                             None if targets is None else targets[chunk],
                             None if token_sets is None else token_sets[chunk]))
        for row, length in enumerate(batch.lengths):
            token_ids.append(batch.input_ids[row, batch.input_ids.shape[1] - length :].tolist())
            wanted.append([int(p) % length for p in positions])
        if progress:
            done = min(len(prompts), start + batch_size)
            progress(done / len(prompts), f"{done}/{len(prompts)} prompts")

    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat([v.detach().cpu() for v in values], dim=1).numpy()

    tokenizer = handle.tokenizer

    top_ids = cat("top_ids")
    return LensResult(
        model=handle.spec, n_layers=handle.n_layers, lens="logit", sites=None,
        tokens=[[token_str(tokenizer, t) for t in ids] for ids in token_ids], token_ids=token_ids,
        positions=wanted, slot_mask=np.ones((len(prompts), len(positions)), dtype=bool),
        top_ids=top_ids,
        top_tokens=[[[[token_str(tokenizer, t) for t in slot] for slot in prompt] for prompt in layer] for layer in top_ids],
        top_probs=cat("top_probs"), entropy_bits=cat("entropy_bits"), kl_to_final_bits=cat("kl_to_final_bits"),
        target_probs=cat("target_probs"), target_ranks=cat("target_ranks"), set_probs=cat("set_probs"),
        extras={} if targets is None else {"target_ids": [list(map(int, t)) for t in targets]},
    )
