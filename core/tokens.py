"""Tokens as people read them, and words as sets of token ids.

A word's token set is every token that can begin it: each prefix of the word that the
tokenizer writes as one token, with and without the leading-space marker (`▁`, `Ġ`), plus
the first token of the word's own tokenization. Byte-fallback tokenizers (Llama-2) begin
most Indic words with a UTF-8 byte token such as <0xE0> that Devanagari and Tamil share;
``TokenSet.first_byte_only`` says when a set holds nothing better, so analyses can
disambiguate (e.g. teacher-force the next byte).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from core.errors import UserError

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def token_str(tokenizer, token_id: int) -> str:
    """The text of one token; byte tokens that are not text on their own keep their <0xNN> name."""
    text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    if "\ufffd" in text or text == "":
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
        return piece if piece is not None else text
    return text


def visible(text: str) -> str:
    """A token's text with spaces and newlines made visible and other control characters escaped (\\x07),
    for chart labels and tables (vl-convert aborts the process on control characters in a chart)."""
    text = text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def is_byte_token(tokenizer, token_id: int) -> bool:
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    return bool(piece and _BYTE_PIECE.match(piece))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _is_blank(tokenizer, token_id: int) -> bool:
    """A token that is only whitespace (Llama's lone `▁` before a digit): it begins every word.

    Llama-style decoders strip a leading space, so a lone `▁` decodes to "" and token_str shows
    its piece "▁": the piece is checked too.
    """
    if is_byte_token(tokenizer, token_id):
        return False
    piece = tokenizer.convert_ids_to_tokens(int(token_id)) or ""
    return token_str(tokenizer, token_id).strip() == "" or piece.replace("▁", "").replace("Ġ", "").strip() == ""


@dataclass(frozen=True)
class TokenSet:
    """The token ids that can begin ``word`` (see the module docstring)."""

    word: str
    ids: frozenset[int]
    first_byte_only: bool  # every id is a byte-fallback token: the set cannot tell scripts apart

    def __len__(self) -> int:
        return len(self.ids)


def word_token_set(tokenizer, word: str) -> TokenSet:
    """All tokens that begin ``word``, with and without a leading space."""
    word = word.strip()
    if not word:
        raise ValueError("cannot build the token set of an empty word")
    return _word_token_set(tokenizer, word)


@lru_cache(maxsize=65536)
def _word_token_set(tokenizer, word: str) -> TokenSet:
    ids: set[int] = set()
    for text in (word, " " + word):
        first = [t for t in _ids(tokenizer, text) if not _is_blank(tokenizer, t)]
        if first:
            ids.add(first[0])
    for end in range(1, len(word) + 1):
        prefix = word[:end]
        for text in (prefix, " " + prefix):
            pieces = [t for t in _ids(tokenizer, text) if not _is_blank(tokenizer, t)]
            if len(pieces) == 1:
                ids.add(pieces[0])
    first_byte_only = bool(ids) and all(is_byte_token(tokenizer, t) for t in ids)
    return TokenSet(word=word, ids=frozenset(ids), first_byte_only=first_byte_only)


def first_char_tokens(tokenizer, word: str) -> list[int]:
    """The tokens that spell the first character of ``word`` as the tokenizer writes the word.

    One id when a token begins with that character; several when the tokenizer spells it in
    pieces (byte fallback: Tamil ௧ is <0xE0><0xAF><0xA7> in Gemma 3; GPT-2's byte-level BPE).
    Teacher-forcing all but the last piece tells scripts apart where the first byte cannot.
    """
    word = word.strip()
    if not word:
        raise ValueError("cannot spell the first character of an empty word")
    ids = _ids(tokenizer, word)
    while ids and _is_blank(tokenizer, ids[0]):
        ids = ids[1:]
    for end in range(1, len(ids) + 1):
        if word[0] in tokenizer.decode(ids[:end], clean_up_tokenization_spaces=False):
            return ids[:end]
    return ids[:1]


def single_token(tokenizer, text: str, vocab_size: int | None = None, what: str = "token") -> int:
    """The one token id ``text`` names: its tokenization when that is one token, or ``#1234`` for an id.

    ``" Paris"`` and ``"Paris"`` are different tokens in most vocabularies; a lone ``▁`` that Llama-style
    tokenizers write before a word or digit is dropped (``"4"`` is ``▁``, ``4`` in Llama-2). A text that
    splits into several tokens, or that the vocabulary does not hold (it becomes the unknown token), is a
    ``UserError`` naming the pieces; ``what`` ("target") names the input in that message.
    """
    if not text:
        raise UserError(f"the {what} token is empty: give one token, e.g. ' Paris'")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (e.g. a shell argument)
        raise UserError(f"the {what} token is not valid Unicode text (it holds bytes that are not UTF-8): retype it") from None
    if re.fullmatch(r"#\d+", text):
        token_id, size = int(text[1:]), vocab_size or len(tokenizer)
        if token_id >= size:
            raise UserError(f"the {what} id {token_id} is outside the vocabulary (0..{size - 1})")
        return token_id
    ids = _ids(tokenizer, text)
    while len(ids) > 1 and _is_blank(tokenizer, ids[0]):
        ids = ids[1:]
    unk = tokenizer.unk_token_id
    if not ids or (ids == [unk] and text != tokenizer.unk_token):
        raise UserError(f"the {what} '{text}' is not in the vocabulary: give a token the model knows")
    if len(ids) > 1:
        pieces = ", ".join(f"'{token_str(tokenizer, t)}'" for t in ids)
        raise UserError(f"the {what} '{text}' is {len(ids)} tokens ({pieces}), not one: give a single token, "
                        f"e.g. '{token_str(tokenizer, ids[0])}', or an id as #1234")
    return ids[0]
