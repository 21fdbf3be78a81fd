"""Word lists: one column per language code, one row per concept, each cell that concept's word.

``load_words()`` reads the list the project ships (``assets/words.csv``); ``parse_words``
reads any CSV of the same shape (an upload, ``--pairs``) and refuses it with a ``UserError``
that lists every bad row: an empty cell, a word in the wrong script for its column, a
quote or line break (they would break the prompts), or the same word twice in one column.
``script_of`` / ``scripts_in`` say which writing system characters and words belong to.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import UserError

WORDS_CSV = Path(__file__).resolve().parents[3] / "assets" / "words.csv"
SHIPPED_LANGUAGES = ("en", "hi", "ta", "fr", "de", "es", "zh", "ru", "ja")


@dataclass(frozen=True)
class Language:
    code: str
    name: str  # written in the language itself, as prompts show it
    english_name: str
    scripts: frozenset[str]  # writing systems its words may use (see ``script_of``)


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en", "English", "English", frozenset({"Latin"})),
        Language("hi", "हिन्दी", "Hindi", frozenset({"Devanagari"})),
        Language("ta", "தமிழ்", "Tamil", frozenset({"Tamil"})),
        Language("fr", "Français", "French", frozenset({"Latin"})),
        Language("de", "Deutsch", "German", frozenset({"Latin"})),
        Language("es", "Español", "Spanish", frozenset({"Latin"})),
        Language("zh", "中文", "Chinese", frozenset({"Han"})),
        Language("ru", "Русский", "Russian", frozenset({"Cyrillic"})),
        Language("ja", "日本語", "Japanese", frozenset({"Han", "Hiragana", "Katakana"})),
        # Not shipped in assets/words.csv, accepted in uploaded lists.
        Language("it", "Italiano", "Italian", frozenset({"Latin"})),
        Language("pt", "Português", "Portuguese", frozenset({"Latin"})),
        Language("nl", "Nederlands", "Dutch", frozenset({"Latin"})),
        Language("ko", "한국어", "Korean", frozenset({"Hangul"})),
        Language("ar", "العربية", "Arabic", frozenset({"Arabic"})),
    )
}

# (first, last) code points of each writing system's blocks.
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x005A, "Latin"), (0x0061, 0x007A, "Latin"), (0x00C0, 0x024F, "Latin"), (0x1E00, 0x1EFF, "Latin"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"),
    (0x0900, 0x097F, "Devanagari"), (0xA8E0, 0xA8FF, "Devanagari"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x1100, 0x11FF, "Hangul"), (0x3130, 0x318F, "Hangul"), (0xAC00, 0xD7AF, "Hangul"),
    (0x3040, 0x309F, "Hiragana"),
    (0x30A0, 0x30FF, "Katakana"), (0x31F0, 0x31FF, "Katakana"), (0xFF66, 0xFF9F, "Katakana"),
    (0x3005, 0x3007, "Han"), (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"), (0xF900, 0xFAFF, "Han"),
    (0x20000, 0x2FA1F, "Han"),
)
def script_of(char: str) -> str | None:
    """The writing system of one character ("Latin", "Devanagari", "Han", ...), None for digits, spaces, punctuation."""
    code = ord(char)
    if char in ("×", "÷"):
        return None
    for first, last, script in _SCRIPT_RANGES:
        if first <= code <= last:
            # Combining marks of a block (Devanagari vowel signs...) belong to it; other symbols do not.
            if unicodedata.category(char)[0] in "LM":
                return script
            return None
    return None


def scripts_in(text: str) -> set[str]:
    """The writing systems of the letters in ``text`` ("Other" for letters outside the known ones)."""
    found = set()
    for char in text:
        script = script_of(char)
        if script is None and unicodedata.category(char)[0] == "L":
            script = "Other"
        if script:
            found.add(script)
    return found


def language(code: str) -> Language:
    """The language with this code; a ``UserError`` listing the known codes otherwise."""
    try:
        return LANGUAGES[code]
    except KeyError:
        raise UserError(f"unknown language code '{code}': use one of {', '.join(LANGUAGES)}") from None


@dataclass(frozen=True)
class WordList:
    """Concepts x languages: ``words[code][i]`` is concept i written in language ``code``."""

    languages: tuple[str, ...]
    words: dict[str, tuple[str, ...]]
    origin: str  # where it came from, for messages

    def __hash__(self) -> int:  # by content (``words`` is a dict): a word list is part of hashable Settings
        return hash((self.languages, tuple(self.words[code] for code in self.languages), self.origin))

    def __len__(self) -> int:
        return len(self.words[self.languages[0]])

    def row(self, index: int) -> dict[str, str]:
        return {code: self.words[code][index] for code in self.languages}

    def require(self, *codes: str) -> None:
        """UserError unless every code is a column of this list."""
        missing = [c for c in dict.fromkeys(codes) if c not in self.words]
        if missing:
            raise UserError(
                f"{self.origin} has no column for {', '.join(repr(c) for c in missing)} "
                f"(its columns: {', '.join(self.languages)}): add the translations or choose another language"
            )


def word_problems(word: str, code: str) -> list[str]:
    """Why ``word`` cannot be a ``code`` word ([] when it can)."""
    if not word.strip():
        return ["is empty"]
    problems = []
    if '"' in word or "\n" in word or "\r" in word:
        problems.append("contains a quote or a line break")
    if word != word.strip():
        problems.append("has spaces around it")
    found = scripts_in(word)
    if not found:
        problems.append("has no letters")
    else:
        wrong = found - LANGUAGES[code].scripts
        if wrong:
            problems.append(
                f"is written in {'/'.join(sorted(wrong))}, not {'/'.join(sorted(LANGUAGES[code].scripts))}"
            )
    return problems


def parse_words(text: str, origin: str = "the word list", max_errors: int = 20) -> WordList:
    """A word list from CSV text whose header names language codes; UserError listing the bad rows."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise UserError(f"{origin} is empty: give a CSV whose first line names language codes, e.g. 'fr,zh'")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise UserError(f"{origin} is not a readable CSV: {err}") from None
    header = [h.strip().lower() for h in rows[0]]
    unknown = [h for h in header if h not in LANGUAGES]
    if unknown:
        raise UserError(
            f"{origin}: the header must name language codes; unknown column(s) {', '.join(repr(h) for h in unknown)} "
            f"(known: {', '.join(LANGUAGES)})"
        )
    if len(set(header)) != len(header):
        raise UserError(f"{origin}: a language appears twice in the header ({', '.join(header)})")
    if len(header) < 2:
        raise UserError(f"{origin} needs at least two language columns, e.g. 'fr,zh'")
    errors: list[str] = []
    seen: dict[str, dict[str, int]] = {code: {} for code in header}
    columns: dict[str, list[str]] = {code: [] for code in header}
    for line, row in enumerate(rows[1:], start=2):  # row numbers as a spreadsheet shows them (header = 1)
        if not any(cell.strip() for cell in row):
            continue  # blank lines are harmless
        if len(row) != len(header):
            errors.append(f"row {line}: {len(row)} cells, expected {len(header)} ({', '.join(header)})")
            continue
        bad = []
        for code, cell in zip(header, row):
            word = unicodedata.normalize("NFC", cell)
            for problem in word_problems(word, code):
                bad.append(f"{code} {word!r} {problem}")
            key = word.casefold()
            if word.strip() and key in seen[code]:
                bad.append(f"{code} {word!r} repeats row {seen[code][key]}")
            seen[code].setdefault(key, line)
            columns[code].append(word)
        if bad:
            errors.append(f"row {line}: " + "; ".join(bad))
    if errors:
        shown = errors[:max_errors]
        more = f" … and {len(errors) - max_errors} more bad rows" if len(errors) > max_errors else ""
        raise UserError(f"{origin} has {len(errors)} bad row(s): " + " | ".join(shown) + more)
    if not columns[header[0]]:
        raise UserError(f"{origin} has a header but no words")
    return WordList(tuple(header), {code: tuple(ws) for code, ws in columns.items()}, origin)


def read_words(path: str | Path) -> WordList:
    """A word list from a CSV file (``--pairs``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"word list not found: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: save the CSV as UTF-8") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    return parse_words(text, origin=str(path))


@lru_cache(maxsize=1)
def load_words() -> WordList:
    """The list the project ships: 225 concepts in en, hi, ta, fr, de, es, zh, ru, ja."""
    return parse_words(WORDS_CSV.read_text(encoding="utf-8"), origin="assets/words.csv")
