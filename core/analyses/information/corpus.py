"""The text an information run reads: a corpus the project ships, the parallel story in a language of
the word list, or a UTF-8 text file; and the window of ``n`` tokens the probes are fitted on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import UserError
from core.models.handle import Batch, ModelHandle

CORPORA_DIR = Path(__file__).resolve().parents[3] / "assets" / "corpora"  # shipped corpora: <name>.txt
TEXTS_DIR = Path(__file__).resolve().parent / "texts"  # the parallel story: <language code>.txt
MIN_TOKENS = 40  # fewer and a probe has too few rows to fit and score (20 each)


@dataclass(frozen=True)
class Text:
    name: str  # what was asked for: a corpus name, a language code or a path
    text: str
    language: str | None  # the parallel story's language, None for other texts


def shipped_corpora() -> list[str]:
    return sorted(p.stem for p in CORPORA_DIR.glob("*.txt"))


def parallel_languages() -> list[str]:
    return sorted(p.stem for p in TEXTS_DIR.glob("*.txt"))


def corpus_names() -> list[str]:
    """What ``--corpus`` accepts by name: the shipped corpora, then the story's language codes."""
    return shipped_corpora() + parallel_languages()


def decode(name: str, raw: bytes) -> str:
    """UTF-8 text from raw bytes; a ``UserError`` for a binary or empty file."""
    if b"\x00" in raw[:65536]:
        raise UserError(f"corpus {name!r} is a binary file, not text: give a UTF-8 .txt file")
    try:
        text = raw.decode("utf-8").lstrip("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as err:
        raise UserError(f"corpus {name!r} is not UTF-8 text (byte {err.start} is invalid): give a UTF-8 .txt file") from None
    if not text.strip():
        raise UserError(f"corpus {name!r} is empty: give a text with some writing in it")
    return text


def load_text(name_or_path: str, word_languages: tuple[str, ...], known_languages) -> Text:
    """A shipped corpus by name, the parallel story by language code, or a text file by path.

    ``word_languages`` are the word list's codes (the story exists in each); ``known_languages`` every
    code the project knows, so that 'it' is refused as a language rather than as an unknown file.
    """
    name = name_or_path.strip()
    if name in shipped_corpora():
        return Text(name, decode(name, (CORPORA_DIR / f"{name}.txt").read_bytes()), None)
    if name in parallel_languages():
        return Text(name, decode(name, (TEXTS_DIR / f"{name}.txt").read_bytes()), name)
    path = Path(name).expanduser()
    if path.is_file():
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read corpus file {str(path)!r}: {err.strerror}") from None
        return Text(str(path), decode(path.name, raw), None)
    if name.lower() in known_languages:
        raise UserError(f"language {name!r} is not in the word list: use one of {', '.join(word_languages)}")
    if path.exists():
        raise UserError(f"corpus {name!r} is a folder, not a text file: give the path of a .txt file")
    raise UserError(f"unknown corpus {name!r}: use one of {', '.join(corpus_names())} or the path of a text file")


@dataclass
class Window:
    """``n`` token positions of a text, each with a previous and a next token.

    ``batch`` holds tokens 0..n+1 (position 0 is BOS, or the text's first token for a tokenizer
    without one); ``positions`` are 1..n. ``prompt`` is the text cut after token n+1 at the latest,
    what ``core.lens.run_lens`` re-tokenizes into the same first n+2 tokens.
    """

    prompt: str
    batch: Batch
    ids: torch.Tensor  # [n + 2] token ids

    @property
    def n(self) -> int:
        return len(self.ids) - 2

    @property
    def positions(self) -> torch.Tensor:
        return torch.arange(1, self.n + 1)


def token_window(handle: ModelHandle, text: str, n: int) -> Window:
    """The first ``n`` positions (plus one before and one after) of ``text``; fewer when the text, or the
    model's context, is shorter."""
    tokenizer = handle.tokenizer
    chars = max(64, 8 * (n + 2))
    while True:
        prompt = text[:chars]
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if len(ids) >= n + 3 or chars >= len(text):
            break
        chars *= 2
    # The last token of a cut text may be a fragment of a longer one: keep it out of the window.
    usable = len(ids) - (1 if chars < len(text) else 0)
    count = min(n, usable - 2, (handle.context_length or n + 2) - 2)
    if count < MIN_TOKENS:
        raise UserError(
            f"the corpus gives only {max(count, 0)} tokens; a probe needs at least {MIN_TOKENS} "
            f"(two thirds to fit, a third to score): give a longer text"
        )
    keep = count + 2
    ids = ids[:keep]
    return Window(_cut(tokenizer, prompt, ids), Batch(torch.tensor([ids]), torch.ones(1, keep, dtype=torch.long), [keep]),
                  torch.tensor(ids))


def _cut(tokenizer, prompt: str, ids: list[int]) -> str:
    """``prompt`` cut where its ``len(ids)``-th token ends, when that re-tokenizes to the same first ids."""
    try:
        offsets = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError):  # a slow tokenizer has no offsets
        return prompt
    cut = prompt[: offsets[len(ids) - 1][1]]
    again = tokenizer(cut, add_special_tokens=True)["input_ids"]
    return cut if again[: len(ids)] == ids else prompt


def story_tokens(handle: ModelHandle) -> dict[str, int]:
    """Tokens the parallel story costs in each language (the same content: fewer tokens, more per token)."""
    return {code: len(handle.tokenizer((TEXTS_DIR / f"{code}.txt").read_text(encoding="utf-8"),
                                       add_special_tokens=False)["input_ids"])
            for code in parallel_languages()}


def token_class(text: str) -> str:
    """What a token is, for colouring: word (begins one), word piece, number, punctuation or space."""
    stripped = text.strip()
    if not stripped:
        return "space"
    if any(c.isalpha() for c in stripped):
        starts = text[0].isspace() or text[0] == "▁" or ord(stripped[0]) >= 0x2E80  # CJK: no spaces between words
        return "word" if starts else "word piece"
    if any(c.isdigit() for c in stripped):
        return "number"
    return "punctuation"
