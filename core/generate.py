"""Greedy decoding, defined once: each prompt's most likely continuation as text.

    greedy(handle, prompts, max_new_tokens, stop=("\\n",)) -> list[str]

One string per prompt, in the prompts' order: the continuation decoded without special tokens,
cut before the first ``stop`` string (the stop string itself is dropped) and at end-of-sequence.
Prompts are batched by token length (left-padded, position ids from the mask), so a
continuation never depends on its batch. Hugging Face models decode with ``model.generate``
(KV cache); other families (tinylm) with a plain loop, one forward pass per new token, through
``handle.logits``. Inference holds ``handle.lock``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from core.errors import UserError
from core.models.handle import Batch, ModelHandle
from core.progress import Progress


def greedy(
    handle: ModelHandle,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    *,
    batch_size: int = 16,
    use_generate: bool | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Each prompt's greedy continuation (see the module docstring); ``use_generate`` forces a path."""
    prompts = list(prompts)
    if max_new_tokens < 1:
        raise UserError("max_new_tokens must be at least 1")
    if batch_size < 1:
        raise UserError("batch size must be at least 1")
    if use_generate is None:
        use_generate = handle.adapter.family != "tinylm" and hasattr(handle.model, "generate")
    tokenizer = handle.tokenizer
    # Prompts of similar length share a batch: less padding (Tamil digits take three byte tokens each).
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i])["input_ids"]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = handle.encode([prompts[i] for i in rows])
        with handle.lock, torch.inference_mode():
            new = (_generate if use_generate else _loop)(handle, batch, max_new_tokens, stop)
        for row, ids in zip(rows, new):
            text = tokenizer.decode(ids, skip_special_tokens=True)
            cut = min([text.index(s) for s in stop if s in text], default=len(text))
            out[row] = text[:cut]
        if progress:
            done = start + len(rows)
            progress(min(1.0, done / len(prompts)), f"greedy answers: {done}/{len(prompts)} prompts")
    return out


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
