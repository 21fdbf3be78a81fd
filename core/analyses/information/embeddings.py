"""Words through the model: their residuals at every layer, their token counts, and their nearest
neighbours in the input and output embeddings.

A word is written as it appears inside a sentence: with a leading space in languages written with
spaces, bare in Chinese and Japanese. Its representation at a layer is the residual at its last
token, with the word alone after BOS as the prompt (the last token has read the whole word).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analyses.translation.wordlist import scripts_in
from core.models.handle import ModelHandle
from core.progress import Progress, quiet
from core.tokens import token_str

UNSPACED_SCRIPTS = {"Han", "Hiragana", "Katakana"}  # written without spaces between words
WORD_BATCH = 128


def in_text(word: str) -> str:
    """The word as it appears inside a sentence (what its tokens per word and residuals are taken from)."""
    word = word.strip()
    return word if scripts_in(word) & UNSPACED_SCRIPTS else " " + word


def word_ids(handle: ModelHandle, word: str) -> list[int]:
    """The tokens of ``in_text(word)``, without special tokens."""
    return handle.tokenizer(in_text(word), add_special_tokens=False)["input_ids"]


def tokens_per_word(handle: ModelHandle, words: list[str]) -> float:
    return sum(len(word_ids(handle, w)) for w in words) / len(words)


def word_residuals(handle: ModelHandle, words: tuple[str, ...], progress: Progress | None = None) -> torch.Tensor:
    """Float[Tensor, "layer word d_model"]: each word's residual at its last token, every layer.

    Computed once per (model, words) while the model is loaded: the words do not depend on the corpus.
    """
    return handle.cached(("information.word_residuals", words), lambda: _word_residuals(handle, words, progress))


def _word_residuals(handle: ModelHandle, words: tuple[str, ...], progress: Progress | None) -> torch.Tensor:
    progress = progress or quiet
    texts = [in_text(w) for w in words]
    lengths = [len(handle.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))  # similar lengths share a batch: less padding
    out = torch.empty(handle.n_layers + 1, len(texts), handle.d_model)
    progress(0.0, f"words through the model: 0/{len(order)}")
    for start in range(0, len(order), WORD_BATCH):
        rows = order[start : start + WORD_BATCH]
        batch = handle.encode([texts[i] for i in rows])
        last = torch.full((len(rows), 1), batch.input_ids.shape[1] - 1)  # left padding: -1 is every word's last token
        out[:, rows] = handle.residuals(batch, last)[:, :, 0].float().cpu()
        progress((start + len(rows)) / len(order), f"words through the model: {start + len(rows)}/{len(order)}")
    return out


@dataclass
class Neighbour:
    token: str
    token_id: int
    cosine: float


@dataclass
class Neighbours:
    """The tokens nearest a word in the input embedding and in the output embedding (unembedding)."""

    word: str
    tokens: list[str]  # the word's own tokens (its vector is their mean embedding row)
    input: list[Neighbour]
    output: list[Neighbour]
    tied: bool  # the model uses one matrix for both: the two lists are the same


def _norms(handle: ModelHandle, which: str, matrix: torch.Tensor) -> torch.Tensor:
    return handle.cached(("information.embedding_norms", which), lambda: matrix.float().norm(dim=-1).clamp_min(1e-12))


def _nearest(handle: ModelHandle, which: str, matrix: torch.Tensor, ids: list[int], k: int) -> list[Neighbour]:
    if not matrix.is_floating_point():  # a quantized matrix (bitsandbytes) has no rows to compare
        return []
    with torch.inference_mode():
        vector = matrix[ids].float().mean(0)
        cosine = (matrix.float() @ vector) / (_norms(handle, which, matrix) * vector.norm().clamp_min(1e-12))
        cosine[len(handle.tokenizer) :] = -2  # padding rows past the tokenizer's vocabulary, if any
        top = cosine.topk(min(k, cosine.shape[0]))
    return [Neighbour(token_str(handle.tokenizer, i), int(i), float(c)) for c, i in zip(top.values, top.indices)]


def neighbours(handle: ModelHandle, word: str, k: int = 10) -> Neighbours:
    """The ``k`` tokens whose input (and output) embedding rows are nearest the word's, by cosine."""
    ids = word_ids(handle, word)
    embed = handle.weights.embedding()
    tied = handle.weights.tied
    unembed = embed if tied else handle.weights.unembedding(packed_ok=True)
    first = _nearest(handle, "input", embed, ids, k)
    second = first if tied else _nearest(handle, "output", unembed, ids, k)
    return Neighbours(word, [token_str(handle.tokenizer, i) for i in ids], first, second, tied)
