"""Many variants of the last positions of prompts: every earlier position runs once, clean, its keys and values
cached; the last ``tail`` positions run again for each variant, with its edits.

An edit at a prompt's last position cannot change an earlier position (the model is causal), so a variant costs
``tail`` tokens through the model instead of the whole prompt: batched patching and steering of the answer
position. Models without a Hugging Face key-value cache (and prompts no longer than the tail) run whole prompts
instead, with the same result.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from core.errors import UserError
from core.interventions.hooks import removing
from core.interventions.sites import add_edit_hooks, add_final_hook
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit


def _tiled(batch: Batch, copies: int) -> Batch:
    """``copies`` copies of the prompts: row ``c * n + p`` is prompt p."""
    return Batch(batch.input_ids.repeat(copies, 1), batch.attention_mask.repeat(copies, 1), list(batch.lengths) * copies)


def _shifted(edit: Edit, width: int, tail: int) -> Edit:
    """``edit`` with padded positions of the whole batch turned into positions of the tail (0..tail-1)."""
    first = width - tail

    def moved(positions):
        out = []
        for p in positions:
            p = p % width
            if p < first:
                raise UserError(f"position {p} is before the last {tail} position(s), which alone are run again: "
                                "edit the last positions only")
            out.append(p - first)
        return tuple(out)

    if edit.cells is not None:
        return replace(edit, cells=(edit.cells[0], moved(edit.cells[1])))
    if edit.positions is None:
        return edit
    return replace(edit, positions=moved(edit.positions))


def _cached(handle: ModelHandle) -> bool:
    return handle.adapter.hugging_face and handle.adapter.family != "tinylm"


def tail_variants(handle: ModelHandle, batch: Batch, copies: int, edits: Sequence[Edit], tail: int = 1) -> torch.Tensor:
    """``ModelHandle.tail_variants``: the last block's output at each row's last position, Float[Tensor,
    "copies*batch d_model"], row ``c * n_prompts + p`` being copy c of prompt p with ``edits`` (their rows index
    the copies; their positions are padded positions of ``batch``, among the last ``tail``)."""
    if copies < 1 or tail < 1:
        raise ValueError("copies and tail must be at least 1")
    width = batch.input_ids.shape[1]
    tail = min(tail, width)
    for edit in edits:  # fail before any pass
        _shifted(edit, width, tail)
    if not _cached(handle) or min(batch.lengths) <= tail:
        return _whole(handle, batch, copies, edits)
    n = len(batch.lengths)
    device = handle.input_device
    ids, mask, positions = (t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.position_ids))
    body = handle.adapter.base(handle.model)
    with handle.lock, torch.inference_mode():
        prefix = body(input_ids=ids[:, :-tail], attention_mask=mask[:, :-tail], position_ids=positions[:, :-tail],
                      use_cache=True)
        cache = prefix.past_key_values
        if copies > 1:
            cache.batch_select_indices(torch.arange(n, device=device).repeat(copies))
        store: dict = {}
        with removing([]) as hooks:
            add_edit_hooks(handle, [_shifted(e, width, tail) for e in edits], hooks)
            add_final_hook(handle, store, hooks)
            body(input_ids=ids[:, -tail:].repeat(copies, 1), attention_mask=mask.repeat(copies, 1),
                 position_ids=positions[:, -tail:].repeat(copies, 1), past_key_values=cache, use_cache=True)
    return store["final"][:, -1]


def _whole(handle: ModelHandle, batch: Batch, copies: int, edits: Sequence[Edit]) -> torch.Tensor:
    """The same variants from whole-prompt passes (the reference the cached path must agree with)."""
    return handle.run_with_edits(_tiled(batch, copies), edits).final[:, -1]
