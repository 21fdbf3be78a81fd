"""Many ablations at once: batched copies of a recorded clean pass, each resuming from its earliest ablated layer.

A copy whose earliest ablated component is in layer l resumes from layer l's recorded input, since
layers before l are unchanged by it; copies with the same earliest layer share one batched pass.
"""

from __future__ import annotations

from typing import Collection, Sequence

import torch

from core.errors import UserError
from core.interventions.components import Activations, Component, check_components
from core.interventions.hooks import capturing, first_tensor, output_tensor, removing, replacing, run_body
from core.interventions.sites import add_edit_hooks
from core.interventions.recorded import CleanRun
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit
from core.progress import Progress


def _tile(value, copies: int, n_prompts: int):
    """Repeat batch-first tensors (ndim >= 2, leading axis = n_prompts) ``copies`` times along the batch."""
    if copies == 1:
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim >= 2 and value.shape[0] == n_prompts:
            return value.repeat(copies, *([1] * (value.ndim - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_tile(v, copies, n_prompts) for v in value)
    if isinstance(value, list):
        return [_tile(v, copies, n_prompts) for v in value]
    if isinstance(value, dict):
        return {k: _tile(v, copies, n_prompts) for k, v in value.items()}
    return value


def _resume(handle: ModelHandle, run: CleanRun, start: int, copies: int) -> torch.Tensor:
    """Run layers ``start..`` on ``copies`` copies of the recorded input of layer ``start`` -> [copies*batch, d_model] at the last position."""
    layers = handle.adapter.layers(handle.model)
    args, kwargs = run.calls[start]
    hidden, _ = first_tensor(args, kwargs)
    hidden = hidden.repeat(copies, 1, 1)
    for index in range(start, len(layers)):
        args, kwargs = run.calls[index]
        _, rebuild = first_tensor(_tile(args, copies, run.n_prompts), _tile(kwargs, copies, run.n_prompts))
        new_args, new_kwargs = rebuild(hidden)
        hidden = output_tensor(layers[index](*new_args, **new_kwargs))
    return hidden[:, -1]


def resume(handle: ModelHandle, run: CleanRun, start: int, copies: int, edits: Sequence[Edit]) -> torch.Tensor:
    """``ModelHandle.resume``: layers ``start..`` on ``copies`` copies of ``run``'s recorded input to layer ``start``,
    with ``edits`` (rows index the copies: row ``c * n_prompts + p``) -> Float[Tensor, "copies*batch d_model"] at the
    last position. Layers before ``start`` are the recorded run's: an edit there has no effect."""
    hooks: list = []
    with handle.lock, torch.inference_mode(), removing(hooks):
        add_edit_hooks(handle, edits, hooks)
        return _resume(handle, run, start, copies)


def run_variants(
    handle: ModelHandle,
    run: CleanRun,
    values: Activations,
    variants: Sequence[Collection[Component]],
    *,
    max_tokens: int = 4096,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The final residual at the last position when ``variants[i]``'s components take ``values``.

    ``values`` has batch axis 1 (broadcast) or ``run.n_prompts`` and ``run.n_positions`` positions.
    Returns Float[Tensor, "variant batch d_model"] (the last layer's output, before the final norm).
    Variants are grouped by their earliest layer and run as batched copies resuming from it,
    ``max_tokens`` tokens per pass; an empty variant is the clean ``run.final``.
    """
    if values.n_positions != run.n_positions:
        raise UserError(
            f"the replacement activations cover {values.n_positions} positions but the prompts have "
            f"{run.n_positions} tokens: clean and corrupted prompts must have the same token length"
        )
    check_components(handle, variants)
    n_layers = handle.n_layers
    out = torch.empty(len(variants), run.n_prompts, run.final.shape[-1], dtype=run.final.dtype, device=run.final.device)
    by_start: dict[int, list[int]] = {}
    for i, components in enumerate(variants):
        start = min((c.layer for c in components), default=n_layers)
        by_start.setdefault(start, []).append(i)
    per_pass = max(1, max_tokens // (run.n_prompts * run.n_positions))
    work = sum((n_layers - s) * len(ix) for s, ix in by_start.items()) or 1
    done = 0
    for start in sorted(by_start):
        indices = by_start[start]
        if start >= n_layers:  # nothing ablated
            out[indices] = run.final.unsqueeze(0)
            continue
        for first in range(0, len(indices), per_pass):
            chunk = indices[first : first + per_pass]
            chunk_variants = [variants[i] for i in chunk]
            with handle.lock, torch.inference_mode(), replacing(handle, values, run.n_prompts, chunk_variants):
                final = _resume(handle, run, start, len(chunk))
            out[chunk] = final.reshape(len(chunk), run.n_prompts, -1).to(out.device, out.dtype)
            done += (n_layers - start) * len(chunk)
            if progress:
                progress(done / work, f"layer {start}: {len(chunk)} ablations in one pass")
    return out


def forward_with(handle: ModelHandle, batch: Batch, values: Activations, components: Collection[Component]) -> torch.Tensor:
    """One ordinary full forward pass with ``components`` replaced by ``values`` -> Float[Tensor, "batch d_model"]
    (the last layer's output at the last position). The reference ``run_variants`` must agree with."""
    with handle.lock, torch.inference_mode(), replacing(handle, values, len(batch.lengths), [components]), \
            capturing(handle) as store:
        run_body(handle, batch)
    return store["final"][:, -1]
