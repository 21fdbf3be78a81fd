"""The local backend's greedy generation: Hugging Face ``generate`` (KV cache) or one full pass per token."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from core.errors import UserError
from core.interventions.hooks import removing
from core.interventions.sites import add_edit_hooks
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit


def generate(handle: ModelHandle, batch: Batch, max_new_tokens: int, stop: Sequence[str] = (),
             kv_cache: bool | None = None, edits: Sequence[Edit] = ()) -> list[list[int]]:
    """``ModelHandle.generate``: new ids per row, cut at end-of-sequence (and after a ``stop`` string appears).
    ``kv_cache`` forces Hugging Face ``generate`` (True) or the plain loop (False); None picks ``generate`` when
    the model has it. ``edits`` apply at every pass, to every position (steering): they may not name positions,
    which mean nothing once new tokens are fed one at a time."""
    if any(e.positions is not None or e.cells is not None for e in edits):
        raise UserError("edits during generation apply to every position: leave their positions out")
    if kv_cache is None:
        kv_cache = handle.adapter.family != "tinylm" and hasattr(handle.model, "generate")
    with handle.lock, torch.inference_mode(), removing([]) as hooks:
        add_edit_hooks(handle, edits, hooks)
        return (_generate if kv_cache else _loop)(handle, batch, max_new_tokens, stop)


def _eos_ids(handle: ModelHandle) -> set[int]:
    eos = handle.tokenizer.eos_token_id
    return {int(eos)} if eos is not None else set()


def _finished(handle: ModelHandle, ids: list[int], stop: Sequence[str]) -> bool:
    if ids and ids[-1] in _eos_ids(handle):
        return True
    text = handle.tokenizer.decode(ids, skip_special_tokens=True)
    return any(s in text for s in stop)


def _trim(handle: ModelHandle, rows: list[list[int]]) -> list[list[int]]:
    """Drop end-of-sequence and what follows it (generate pads finished rows)."""
    eos = _eos_ids(handle)
    out = []
    for row in rows:
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        out.append(row[:cut])
    return out


def _generate(handle: ModelHandle, batch: Batch, max_new_tokens: int, stop: Sequence[str]) -> list[list[int]]:
    """New ids per row from Hugging Face ``generate`` (greedy, KV cache), stopping at a stop string."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    width = batch.input_ids.shape[1]

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor(
                [_finished(handle, row[width:].tolist(), stop) for row in input_ids], device=input_ids.device
            )

    device = handle.input_device
    output = handle.model.generate(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        pad_token_id=handle.pad_token_id,
        eos_token_id=sorted(_eos_ids(handle)) or None,
        stopping_criteria=StoppingCriteriaList([StopStrings()]),
    )
    return _trim(handle, output[:, width:].cpu().tolist())


def _loop(handle: ModelHandle, batch: Batch, max_new_tokens: int, stop: Sequence[str]) -> list[list[int]]:
    """New ids per row from one full forward pass per token (models without ``generate``)."""
    real_vocab = len(handle.tokenizer)
    ids, mask, lengths = batch.input_ids, batch.attention_mask, list(batch.lengths)
    new: list[list[int]] = [[] for _ in lengths]
    done = [False] * len(lengths)
    for _ in range(max_new_tokens):
        logits = handle.logits(Batch(ids, mask, lengths))[:, -1, :]  # [batch, vocab]
        if logits.shape[-1] > real_vocab:  # rows past the tokenizer are padding, never text
            logits[:, real_vocab:] = -math.inf
        next_ids = logits.argmax(-1).cpu()
        for row, token in enumerate(next_ids.tolist()):
            if not done[row]:
                new[row].append(token)
                done[row] = _finished(handle, new[row], stop)
        if all(done):
            break
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        lengths = [n + 1 for n in lengths]
    return _trim(handle, new)
