"""Scoring a lookup: prompts as token ids, the answer's probability at every layer, greedy correctness.

Both tasks score the same way. An ``Item`` is a prompt's token ids, whose last position predicts the
answer, and the answer's token ids. A lone-space token that begins the answer (Gemma writes " 42" as
" ", "4", "2") is moved to the prompt: the position that matters is the one predicting "4". A prompt is
correct when greedy decoding, teacher-forced on the answer, reproduces every answer token; ``p_answer``
is the probability of the answer's first token at that last position, read through the logit lens at
every layer (layer 0 = embeddings, n_layers = the model's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from core.errors import UserError
from core.models.handle import Batch, ModelHandle, max_prompt_tokens
from core.progress import Progress, quiet
from core.tokens import is_byte_token, token_str

LOGIT_BUDGET = 64 * 2**20  # floats of logits decoded at once (256 MB in float32): Gemma's 262k-token
# unembedding runs near full speed from a few hundred rows, and every decode reads all of it
TOKENS_PER_PASS = 4096  # prompt tokens per forward pass


@dataclass(frozen=True)
class Item:
    """One prompt to score. ``span`` is [start, end) of the positions the query is about (the queried
    pair in context, or the subject of a fact)."""

    ids: tuple[int, ...]
    answer: tuple[int, ...]
    span: tuple[int, int]

    @property
    def last(self) -> int:
        return len(self.ids) - 1


def ids_of(tokenizer, text: str, special: bool = True) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def is_blank(tokenizer, token_id: int) -> bool:
    """A token that is only whitespace (it begins a number in Gemma and Llama tokenizers)."""
    return not is_byte_token(tokenizer, token_id) and token_str(tokenizer, token_id).strip() == ""


def split_answer(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of ``prompt + " " + answer`` as the model reads it, lone spaces moved
    to the prompt. The answer's tokens come from the joint tokenization when the prompt's own is a
    prefix of it, else from ``" " + answer`` alone."""
    prompt_ids = ids_of(tokenizer, prompt)
    joint = ids_of(tokenizer, f"{prompt} {answer}")
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        answer_ids = joint[len(prompt_ids):]
    else:
        answer_ids = ids_of(tokenizer, " " + answer, special=False)
    while len(answer_ids) > 1 and is_blank(tokenizer, answer_ids[0]):
        prompt_ids.append(answer_ids.pop(0))
    if not answer_ids:
        raise UserError(f"the answer '{answer}' produced no tokens: give a word the model can write")
    return prompt_ids, answer_ids


def token_span(tokenizer, text: str, start: int, end: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens of ``text`` (with special tokens) that cover characters [start, end):
    from the tokenizer's offsets when it gives them, else by tokenizing the text up to each end."""
    try:
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        offsets = None
    if offsets:
        covering = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
        if covering:
            return covering[0], covering[-1] + 1
    before = len(ids_of(tokenizer, text[:start].rstrip())) if text[:start].strip() else len(ids_of(tokenizer, ""))
    through = len(ids_of(tokenizer, text[:end]))
    return min(before, through - 1), through


def check_length(handle: ModelHandle, n_tokens: int, what: str) -> None:
    """``UserError`` when a prompt of ``n_tokens`` exceeds the model's context or this installation's cap."""
    if handle.context_length and n_tokens > handle.context_length:
        raise UserError(f"{what} is {n_tokens} tokens, longer than the model's context of {handle.context_length}: "
                        "make it shorter")
    cap = max_prompt_tokens()
    if cap and n_tokens > cap:
        raise UserError(f"{what} is {n_tokens} tokens; this installation looks at most {cap} tokens per prompt "
                        "(LAYERSCOPE_MAX_PROMPT_TOKENS): make it shorter")


def make_batch(handle: ModelHandle, rows: Sequence[Sequence[int]]) -> Batch:
    """Token id lists, left-padded (position -1 is every row's last token)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), handle.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    return Batch(input_ids, mask, [len(r) for r in rows])


def answer_probs(handle: ModelHandle, residual: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p(ids) and the top-1 token of residual vectors: ``residual`` [..., d_model], ``ids`` [...] ->
    (Float[Tensor, "..."], Long[Tensor, "..."]), the whole vocabulary decoded a chunk at a time."""
    shape = residual.shape[:-1]
    flat = residual.reshape(-1, residual.shape[-1])
    flat_ids = ids.reshape(-1).to(torch.long)
    per_chunk = max(1, LOGIT_BUDGET // max(1, handle.vocab_size))
    probs, tops = [torch.zeros(0)], [torch.zeros(0, dtype=torch.long)]
    for start in range(0, flat.shape[0], per_chunk):
        logits = handle.decode(flat[start:start + per_chunk])  # [c, vocab]
        target = logits.gather(1, flat_ids[start:start + per_chunk, None].to(logits.device))[:, 0]
        probs.append((target - logits.logsumexp(-1)).exp().cpu())
        tops.append(logits.argmax(-1).cpu())
        del logits
    return torch.cat(probs).reshape(shape), torch.cat(tops).reshape(shape)


@dataclass
class Scores:
    """Per item: ``correct`` (greedy, teacher-forced over every answer token), ``p_answer`` (final layer,
    first answer token), ``top_ids`` (the model's top-1 at the answer position); for the items asked to be
    lensed, ``p_layers`` [item, layer] and ``top1_layers`` [item, layer] (NaN / False elsewhere)."""

    correct: np.ndarray
    p_answer: np.ndarray
    top_ids: np.ndarray
    p_layers: np.ndarray
    top1_layers: np.ndarray

    def settled_layer(self, i: int) -> int | None:
        """The first layer from which the answer is top-1 at every later layer (None if it never settles)."""
        top1 = self.top1_layers[i]
        if not top1[-1]:
            return None
        wrong = np.flatnonzero(~top1)
        return int(wrong[-1] + 1) if len(wrong) else 0


def score(handle: ModelHandle, items: Sequence[Item], lens: Sequence[bool] | None = None,
          progress: Progress | None = None) -> Scores:
    """Teacher-forced greedy correctness of every item and, for ``lens[i]``, the answer's probability at
    every layer: one forward pass per chunk of prompts (their residuals kept at the answer positions only)."""
    progress = progress or quiet
    n, n_layers = len(items), handle.n_layers
    lens = [True] * n if lens is None else list(lens)
    correct = np.zeros(n, dtype=bool)
    p_answer = np.zeros(n)
    top_ids = np.zeros(n, dtype=np.int64)
    p_layers = np.full((n, n_layers + 1), np.nan)
    top1_layers = np.zeros((n, n_layers + 1), dtype=bool)
    order = sorted(range(n), key=lambda i: len(items[i].ids) + len(items[i].answer))  # similar lengths share a pass
    start = 0
    while start < n:
        chunk = [order[start]]
        while start + len(chunk) < n:
            nxt = order[start + len(chunk)]
            width = len(items[nxt].ids) + len(items[nxt].answer)
            if (len(chunk) + 1) * width > TOKENS_PER_PASS:
                break
            chunk.append(nxt)
        rows = [list(items[i].ids) + list(items[i].answer[:-1]) for i in chunk]
        batch = make_batch(handle, rows)
        slots = max(len(items[i].answer) for i in chunk)
        width = batch.input_ids.shape[1]
        index = torch.tensor([[width - len(items[i].answer) + min(s, len(items[i].answer) - 1) for s in range(slots)]
                              for i in chunk])  # slot s predicts answer token s (padding slots repeat the last)
        answers = torch.tensor([[items[i].answer[min(s, len(items[i].answer) - 1)] for s in range(slots)] for i in chunk])
        residual = handle.residuals(batch, index)  # [layer, b, slot, d_model]
        p_final, top_final = answer_probs(handle, residual[-1], answers)  # [b, slot]
        for row, i in enumerate(chunk):
            k = len(items[i].answer)
            correct[i] = bool((top_final[row, :k] == answers[row, :k]).all())
            p_answer[i] = float(p_final[row, 0])
            top_ids[i] = int(top_final[row, 0])
        lensed = [row for row, i in enumerate(chunk) if lens[i]]
        if lensed:
            picked = residual[:, lensed, 0]  # [layer, rows, d_model]
            first = answers[lensed, 0].unsqueeze(0).expand(n_layers + 1, -1)
            p, top = answer_probs(handle, picked, first)
            for j, row in enumerate(lensed):
                p_layers[chunk[row]] = p[:, j].numpy()
                top1_layers[chunk[row]] = (top[:, j] == first[:, j]).numpy()
        start += len(chunk)
        progress(start / n, f"scored {start}/{n} prompts")
    return Scores(correct, p_answer, top_ids, p_layers, top1_layers)
