"""Exact ablation of heads and MLPs inside nnsight traces: only the mean logit difference of each comes back.

One trace runs a batch of rows ``[corrupted prompts | copy 0 | copy 1 | …]``: copy 0 is the clean prompts
untouched, copy c the clean prompts with ``variants[c - 1]`` ablated. At each layer the corrupted rows give
the values (their mean per position, zeros, or one drawn corrupted prompt per clean prompt: ``core.interventions``'
``replacement``); a head is ablated by replacing its slice of the attention output projection's input, an MLP
by replacing its output. The corrupted rows are never edited, so each trace needs nothing from another and no
activation ever leaves the server. On NDIF every trace runs inside one session: one request for the sweep.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Collection, Sequence

import torch

from core.errors import UserError
from core.backends.nnsight_backend import nnsight_backend
from core.interventions import SweepNumbers, check_ablation
from core.interventions.sweep import check_pairs
from core.models.handle import Batch, ModelHandle
from core.progress import Progress


def _masks(handle: ModelHandle, chunk: Sequence[Collection]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, which copy (0 = clean) ablates which heads ([layer, copy, head] bool) and its MLP ([layer, copy])."""
    heads = torch.zeros(handle.n_layers, len(chunk) + 1, handle.n_heads, dtype=torch.bool)
    mlps = torch.zeros(handle.n_layers, len(chunk) + 1, dtype=torch.bool)
    for copy, components in enumerate(chunk, start=1):
        for c in components:
            if not 0 <= c.layer < handle.n_layers or c.head >= handle.n_heads:
                raise UserError(f"{c.label} does not exist: the model has {handle.n_layers} layers x {handle.n_heads} heads")
            if c.is_mlp:
                mlps[c.layer, copy] = True
            else:
                heads[c.layer, copy, c.head] = True
    return heads, mlps


def ablation_sweep(handle: ModelHandle, clean: Batch, corrupt: Batch, answers: torch.Tensor,
                   variants: Sequence[Collection], ablation: str = "mean", seed: int = 0, *,
                   max_tokens: int = 4096, progress: Progress | None = None) -> SweepNumbers:
    """The mean logit difference (``answers`` [prompt, 2]: correct, incorrect) with each variant's components
    replaced (``ablation``: mean, zero or resample of the corrupted prompts), from nnsight traces."""
    check_ablation(ablation)
    check_pairs(clean, corrupt)
    n, positions = clean.input_ids.shape
    n_corrupt = corrupt.input_ids.shape[0]
    resample = torch.randint(n_corrupt, (n,), generator=torch.Generator().manual_seed(seed)) if ablation == "resample" else None
    backend = nnsight_backend(handle)
    wrapped, layers, norm, unembed = backend.traced(handle)
    blocks = handle.adapter.layers(handle.model)
    projs = backend.envoys(handle, [handle.adapter.attn_out_proj(layer) for layer in blocks])
    mlp_envoys = backend.envoys(handle, [handle.adapter.mlp(layer) for layer in blocks])
    cap = handle.weights.softcap
    scale = handle.weights.logit_scale
    unembed_module = handle.adapter.unembed(handle.model)
    rows_only = getattr(unembed_module, "bias", None) is None and getattr(unembed_module, "weight", None) is not None \
        and unembed_module.weight.dtype.is_floating_point
    n_heads, head_dim = handle.n_heads, handle.head_dim
    per_trace = max(1, max_tokens // (n * positions) - 1)
    chunks = [list(variants[i : i + per_trace]) for i in range(0, len(variants), per_trace)] or [[]]
    masks = [_masks(handle, chunk) for chunk in chunks]
    device = handle.input_device
    clean_ids, corrupt_ids = clean.input_ids.to(device), corrupt.input_ids.to(device)
    answer_ids = answers.to(torch.long)
    # Everything inside the session block is shipped to NDIF as source: tensors, numbers and envoys only.
    import nnsight

    remote = backend.remote
    session = wrapped.session(remote=remote) if remote else nullcontext()
    report = None if remote else progress  # nothing is reported from inside one remote request
    means = []
    with handle.lock, torch.inference_mode(), backend.remote_errors():
        with session:
            for head_mask, mlp_mask in masks:
                copies = head_mask.shape[1]
                ids = torch.cat([corrupt_ids, clean_ids.repeat(copies, 1)])
                with wrapped.trace(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False):
                    for layer in range(len(layers)):
                        for envoy, mask, split in ((projs[layer], head_mask[layer], True), (mlp_envoys[layer], mlp_mask[layer], False)):
                            if not bool(mask.any()):
                                continue
                            raw = envoy.input if split else envoy.output
                            x = raw[0] if isinstance(raw, tuple) else raw
                            rows, width = x[n_corrupt:], x.shape[-1]
                            shape = (copies, n, positions, n_heads, head_dim) if split else (copies, n, positions, width)
                            source = x[:n_corrupt]
                            if resample is not None:
                                source = source[resample.to(x.device)]
                            elif ablation == "zero":
                                source = torch.zeros_like(source[:1])
                            else:
                                source = source.mean(0, keepdim=True)
                            where = mask.to(x.device).view(copies, 1, 1, *((n_heads, 1) if split else (1,)))
                            new = torch.where(where, source.reshape(1, -1, *shape[2:]), rows.reshape(shape))
                            new = torch.cat([x[:n_corrupt], new.reshape(copies * n, positions, width)])
                            if split:
                                envoy.input = new
                            else:
                                envoy.output = (new, *raw[1:]) if isinstance(raw, tuple) else new
                    out = layers[-1].output
                    final = (out[0] if isinstance(out, tuple) else out)[n_corrupt:, -1]
                    x = norm(final)
                    if rows_only:  # only the answers' rows of the unembedding, as core.analyses.sequences.token_logits
                        weight = unembed.weight
                        ids = answer_ids.to(weight.device).repeat(copies, 1)
                        picked = torch.einsum("nd,nkd->nk", x.to(weight.dtype), weight[ids]).float()
                    else:
                        picked = unembed(x).float().gather(1, answer_ids.to(x.device).repeat(copies, 1))
                    if scale != 1.0:
                        picked = picked * scale
                    if cap:
                        picked = torch.tanh(picked / cap) * cap
                    means.append((picked[:, 0] - picked[:, 1]).reshape(copies, n).mean(1).save())
                if report:
                    report(len(means) / len(masks), f"{sum(m.shape[1] - 1 for m, _ in masks[: len(means)])} ablations")
            if remote:  # a list built in the session comes back only when saved itself
                means = nnsight.save(means)
    values = [m.detach().float().cpu() for m in means]
    return SweepNumbers(full=float(values[0][0]), ablated=torch.cat([v[1:] for v in values]).numpy()[: len(variants)],
                       n_traces=len(masks), saved_bytes=sum(v.numel() * v.element_size() for v in values))

