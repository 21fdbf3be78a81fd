"""Arithmetic problems: seeded few-shot problems and their prompts, written in any numeral system.

``generate_problems`` depends only on the settings (never on the numeral system), so every
system gets the same problems. Prompt lines are compact, ``7+5=12`` (``७+५=१२`` …): with no
space before the answer every system's first digit is the very next token (Gemma and Llama
write `` 4`` as ``▁``, ``4`` but `` ४`` as one token, so a space would favour some systems).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from core.analyses.arithmetic.numerals import SYSTEM_KEYS, SYSTEMS, format_number
from core.errors import UserError

if TYPE_CHECKING:
    from core.analyses.arithmetic.analysis import Settings

OPS = ("add", "sub", "mul", "next")
OP_LABELS = {"add": "addition", "sub": "subtraction", "mul": "multiplication", "next": "next number"}
SURROUNDS = ("none", "english", "hindi")
_SYMBOL = {"add": "+", "sub": "-", "mul": "×"}
_HEADER = {"none": "", "english": "Solve each problem.\n", "hindi": "हर सवाल हल करो।\n"}
_LINE_LABEL = {
    "english": {"add": "Addition", "sub": "Subtraction", "mul": "Multiplication", "next": "Next number"},
    "hindi": {"add": "जोड़", "sub": "घटाव", "mul": "गुणा", "next": "अगली संख्या"},
}


@dataclass(frozen=True)
class Problem:
    """One query and its solved examples; numbers only, written in a system when rendered."""

    op: str
    operands: tuple[int, ...]  # (a, b), or (a,) for "next": a, a+1, a+2 -> a+3
    answer: int
    demos: tuple[tuple[tuple[int, ...], int], ...]  # (operands, answer) of each solved example


def answer_of(op: str, operands: tuple[int, ...]) -> int:
    a = operands[0]
    if op == "next":
        return a + 3
    b = operands[1]
    return {"add": a + b, "sub": a - b, "mul": a * b}[op]


def _draw(rng: random.Random, op: str, lo: int, hi: int) -> tuple[int, ...]:
    a = rng.randint(lo, hi)
    if op == "next":
        return (a,)
    b = rng.randint(lo, hi)
    return (max(a, b), min(a, b)) if op == "sub" else (a, b)  # no negative answers


def _distinct(op: str, lo: int, hi: int) -> int:
    k = hi - lo + 1
    return k if op == "next" else k * (k + 1) // 2 if op == "sub" else k * k


def generate_problems(settings: Settings) -> list[Problem]:
    """``settings.n`` problems, distinct while the range allows, each with ``shots`` other solved examples.

    Depends only on the settings (never on the numeral system), so every system gets the same problems.
    """
    settings.validate_problems()
    op, lo, hi = settings.op, settings.lo, settings.hi
    rng = random.Random(settings.seed)
    distinct = _distinct(op, lo, hi)
    queries: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(queries) < settings.n:
        operands = _draw(rng, op, lo, hi)
        if settings.n <= distinct and operands in seen:
            continue
        seen.add(operands)
        queries.append(operands)
    problems = []
    for operands in queries:
        demos: list[tuple[int, ...]] = []
        while len(demos) < settings.shots:
            demo = _draw(rng, op, lo, hi)
            if distinct > 1 and demo == operands:
                continue
            if distinct - 1 >= settings.shots and demo in demos:
                continue
            demos.append(demo)
        problems.append(
            Problem(op, operands, answer_of(op, operands), tuple((d, answer_of(op, d)) for d in demos))
        )
    return problems


def render_line(op: str, operands: tuple[int, ...], answer: int | None, numerals: str, surround: str = "none") -> str:
    """One problem line, e.g. ``7+5=12``; without the answer when ``answer`` is None (the query)."""
    write = lambda n: format_number(n, numerals)  # noqa: E731
    tail = "" if answer is None else write(answer)
    if op == "next":
        a = operands[0]
        text = ",".join(write(x) for x in (a, a + 1, a + 2)) + "," + tail
    else:
        text = f"{write(operands[0])}{_SYMBOL[op]}{write(operands[1])}={tail}"
    return text if surround == "none" else f"{_LINE_LABEL[surround][op]}: {text}"


def render_prompt(problem: Problem, numerals: str, surround: str = "none") -> str:
    """Header (with surrounding text), one solved example per line, then the query up to the answer."""
    lines = [render_line(problem.op, ops, ans, numerals, surround) for ops, ans in problem.demos]
    lines.append(render_line(problem.op, problem.operands, None, numerals, surround))
    return _HEADER[surround] + "\n".join(lines)


def check_systems(systems: Sequence[str]) -> list[str]:
    """``systems`` without repeats, in order; a ``UserError`` when empty or when one is unknown."""
    systems = list(dict.fromkeys(systems))
    if not systems:
        raise UserError("choose at least one numeral system")
    for key in systems:
        if key not in SYSTEMS:
            raise UserError(f"unknown numeral system '{key}': choose one of {', '.join(SYSTEM_KEYS)}")
    return systems

