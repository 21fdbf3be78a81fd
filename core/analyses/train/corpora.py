"""Training text: the corpora shipped in assets/corpora, a file path, or an uploaded file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

CORPORA_DIR = Path(__file__).resolve().parents[3] / "assets" / "corpora"

# name -> (file in CORPORA_DIR, one-line description); sources and licences in its README.md
SHIPPED_CORPORA = {
    "shakespeare": ("shakespeare.txt", "Macbeth, Hamlet and The Tempest (public domain), 376 kB"),
    "synthetic": ("synthetic.txt", "counting, addition facts and bracket matching, one per line, 180 kB"),
}
DEFAULT_CORPUS = "shakespeare"
MIN_CORPUS_CHARS = 200


@dataclass(frozen=True)
class Corpus:
    """A named training text."""

    name: str
    text: str


def corpus_names() -> list[str]:
    return list(SHIPPED_CORPORA)


def describe_corpus(name: str) -> str:
    return SHIPPED_CORPORA[name][1]


def decode_text(name: str, raw: bytes) -> Corpus:
    """Validate raw bytes as a usable corpus: UTF-8 text of at least MIN_CORPUS_CHARS characters."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"corpus {name!r} is not UTF-8 text (byte {err.start} is invalid); upload a plain .txt file") from None
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise UserError(f"corpus {name!r} is empty; give a text file with some writing in it")
    if len(text) < MIN_CORPUS_CHARS:
        raise UserError(
            f"corpus {name!r} has only {len(text)} characters; give at least {MIN_CORPUS_CHARS} "
            "so there is something to hold out for validation"
        )
    return Corpus(name, text)


def load_corpus(name_or_path: str) -> Corpus:
    """A shipped corpus by name (see `corpus_names()`), or a UTF-8 text file by path."""
    if name_or_path in SHIPPED_CORPORA:
        return decode_text(name_or_path, (CORPORA_DIR / SHIPPED_CORPORA[name_or_path][0]).read_bytes())
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise UserError(
            f"unknown corpus {name_or_path!r}: use one of {', '.join(SHIPPED_CORPORA)} or the path of a text file"
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read corpus file {str(path)!r}: {err.strerror}") from None
    return decode_text(path.stem, raw)
