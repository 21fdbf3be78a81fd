"""Greedy decoding, defined once: each prompt's most likely continuation as text.

    greedy(handle, prompts, max_new_tokens, stop=("\\n",)) -> list[str]

One string per prompt, in the prompts' order: the continuation decoded without special tokens,
cut before the first ``stop`` string (the stop string itself is dropped) and at end-of-sequence.
Prompts are batched by token length (left-padded, position ids from the mask), so a
continuation never depends on its batch. Decoding runs behind ``handle.generate`` (the local
backend: Hugging Face ``generate`` with its KV cache, or one forward pass per new token for tinylm).
"""

from __future__ import annotations

from typing import Sequence

from core.errors import UserError
from core.models.handle import ModelHandle
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
    tokenizer = handle.tokenizer
    # Prompts of similar length share a batch: less padding (Tamil digits take three byte tokens each).
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i])["input_ids"]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = handle.encode([prompts[i] for i in rows])
        new = handle.generate(batch, max_new_tokens, stop, kv_cache=use_generate)
        for row, ids in zip(rows, new):
            text = tokenizer.decode(ids, skip_special_tokens=True)
            cut = min([text.index(s) for s in stop if s in text], default=len(text))
            out[row] = text[:cut]
        if progress:
            done = start + len(rows)
            progress(min(1.0, done / len(prompts)), f"greedy answers: {done}/{len(prompts)} prompts")
    return out


