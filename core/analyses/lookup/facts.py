"""Parametric lookup: subject → attribute facts (``assets/facts.csv`` or an uploaded ``prompt,answer`` CSV).

A fact is correct, zero-shot and greedy, when the model's next token is the first token of
``" " + answer``; an answer of several tokens is scored by its first and the result says so. With
``shots`` > 0 each prompt is preceded by that many other facts of the same relation and language
(``prompt answer`` lines).
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

from core.analyses.lookup.answers import Item, check_length, split_answer, token_span
from core.errors import UserError
from core.models.handle import ModelHandle
from core.tokens import token_str

SHIPPED = Path(__file__).resolve().parents[3] / "assets" / "facts.csv"
COLUMNS = ("prompt", "answer", "relation", "language", "subject")
MAX_FACTS = 5000


@dataclass(frozen=True)
class Fact:
    prompt: str
    answer: str
    relation: str = ""
    language: str = ""
    subject: str = ""  # where in the prompt the subject is (for causal tracing); may be empty


def parse(data: bytes, name: str = "the facts file") -> list[Fact]:
    """Facts from CSV bytes with a ``prompt,answer`` header (optional ``relation,language,subject``);
    ``UserError`` naming what to fix for an empty, binary or malformed file or empty cells."""
    if not data or not data.strip():
        raise UserError(f"{name} is empty: give a CSV whose header is prompt,answer and one fact per row")
    if b"\x00" in data[:8192]:
        raise UserError(f"{name} is a binary file, not a CSV: give a text CSV whose header is prompt,answer")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{name} is not UTF-8 text: save it as a UTF-8 CSV whose header is prompt,answer") from None
    try:
        reader = csv.reader(io.StringIO(text))
        header = [h.strip().lower() for h in next(reader)]
        rows = list(reader)
    except csv.Error as err:
        raise UserError(f"{name} is not a readable CSV ({err}): give a header prompt,answer and one fact per row") from None
    missing = [c for c in ("prompt", "answer") if c not in header]
    if missing:
        shown = ", ".join(h for h in header if h) or "none"
        raise UserError(f"{name} lacks the column(s) {', '.join(missing)} (its columns: {shown}): the header must "
                        "name prompt and answer (optional: relation, language, subject)")
    where = {c: header.index(c) for c in COLUMNS if c in header}
    facts, empty_answers, empty_prompts, stray = [], [], [], []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in where.items()}
        if not cells["prompt"]:
            empty_prompts.append(line)
        if not cells["answer"]:
            empty_answers.append(line)
        if cells.get("subject") and cells["subject"] not in cells["prompt"]:
            stray.append(line)
        facts.append(Fact(**cells))
    for lines, what in ((empty_answers, "an empty answer"), (empty_prompts, "an empty prompt"),
                        (stray, "a subject that does not appear in its prompt")):
        if lines:
            raise UserError(f"{name}: {_rows(lines)} {'has' if len(lines) == 1 else 'have'} {what}: fix or remove them")
    if not facts:
        raise UserError(f"{name} has a header but no facts: add one fact per row (prompt,answer)")
    if len(facts) > MAX_FACTS:
        raise UserError(f"{name} has {len(facts)} facts; at most {MAX_FACTS} are looked at: split it")
    return facts


def _rows(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:8])) + (f" and {len(lines) - 8} more" if len(lines) > 8 else "")
    return f"row {shown}" if len(lines) == 1 else f"rows {shown}"


def shipped() -> list[Fact]:
    return parse(SHIPPED.read_bytes(), "assets/facts.csv")


def with_shots(facts: list[Fact], shots: int, seed: int) -> list[str]:
    """Each fact's text with ``shots`` other facts (same relation and language when there are enough) before it."""
    if shots <= 0:
        return [f.prompt for f in facts]
    rng = random.Random(seed)
    texts = []
    for i, fact in enumerate(facts):
        same = [j for j, f in enumerate(facts) if j != i and (f.relation, f.language) == (fact.relation, fact.language)]
        others = same if len(same) >= shots else [j for j in range(len(facts)) if j != i]
        if len(others) < shots:
            raise UserError(f"{shots} shots need {shots + 1} facts or more; there are {len(facts)}: use fewer shots")
        shown = [facts[j] for j in rng.sample(others, shots)]
        texts.append("".join(f"{f.prompt} {f.answer}\n" for f in shown) + fact.prompt)
    return texts


def items(handle: ModelHandle, facts: list[Fact], shots: int, seed: int) -> tuple[list[Item], list[str]]:
    """Each fact as an ``Item`` scored by its answer's first token (span = the subject's tokens), and notes
    (answers of several tokens)."""
    texts = with_shots(facts, shots, seed)
    out, several = [], []
    for fact, text in zip(facts, texts):
        ids, answer = split_answer(handle.tokenizer, text, fact.answer)
        check_length(handle, len(ids) + 1, f"the prompt '{fact.prompt[:40]}'")
        if len(answer) > 1:
            several.append((fact.answer, token_str(handle.tokenizer, answer[0])))
        span = (0, 0)
        if fact.subject:
            start = len(text) - len(fact.prompt) + fact.prompt.index(fact.subject)
            span = token_span(handle.tokenizer, text, start, start + len(fact.subject))
        out.append(Item(tuple(ids), (answer[0],), span))
    notes = []
    if several:
        examples = ", ".join(f"'{a}' → '{t}'" for a, t in several[:3])
        notes.append(f"{len(several)} of {len(facts)} answers are several tokens under this tokenizer "
                     f"(e.g. {examples}): each is scored by its first token")
    return out, notes
