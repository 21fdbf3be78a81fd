"""Character-level and byte-level BPE tokenizers, both as `transformers.PreTrainedTokenizerFast`.

Both are built as a `tokenizers.Tokenizer` so a checkpoint's tokenizer.json loads anywhere
(AutoTokenizer, the logit-lens page) and generic code can pad, decode and list tokens.
Padding is on the left, the convention for batched next-token prediction.
"""

from __future__ import annotations

import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from core.errors import UserError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we train in threads; avoid fork warnings

TOKENIZER_KINDS = ("char", "bpe")
PAD, UNK = "<pad>", "<unk>"
DEFAULT_BPE_VOCAB = 512
MIN_BPE_VOCAB = 260  # 256 byte tokens + the specials


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, padding_side="left"
    )


def char_tokenizer(text: str) -> PreTrainedTokenizerFast:
    """One token per Unicode character seen in `text` (ids 0 and 1 are <pad> and <unk>)."""
    vocab = {PAD: 0, UNK: 1}
    for char in sorted(set(text)):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()  # join characters back without separators
    return _wrap(tokenizer)


def check_bpe_vocab(vocab_size: int) -> None:
    if vocab_size < MIN_BPE_VOCAB:
        raise UserError(f"BPE vocabulary size must be at least {MIN_BPE_VOCAB} (256 bytes + specials), got {vocab_size}")


def bpe_tokenizer(text: str, vocab_size: int = DEFAULT_BPE_VOCAB) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) trained on `text`: 256 byte tokens plus learned merges."""
    check_bpe_vocab(vocab_size)
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return _wrap(tokenizer)


def build_tokenizer(text: str, kind: str = "char", bpe_vocab_size: int = DEFAULT_BPE_VOCAB):
    """The tokenizer of `kind` ("char" or "bpe") fitted to `text`."""
    if kind == "char":
        return char_tokenizer(text)
    if kind == "bpe":
        return bpe_tokenizer(text, bpe_vocab_size)
    raise UserError(f"unknown tokenizer {kind!r}: use one of {', '.join(TOKENIZER_KINDS)}")


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of `text` with no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def token_labels(tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> list[str]:
    """Each id as readable text for chart axes: spaces as '·', newlines as '⏎'."""
    return [tokenizer.decode([i]).replace(" ", "·").replace("\n", "⏎") or "∅" for i in ids]
