"""Accuracy per numeral system: greedy decoding of the whole answer, exact match after normalisation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from core.analyses.arithmetic.numerals import SYSTEM_KEYS, SYSTEMS, format_number, parse_any, parse_number
from core.analyses.arithmetic.problems import Problem, check_systems, generate_problems, render_prompt
from core.generate import greedy
from core.models.handle import ModelHandle
from core.progress import Progress

if TYPE_CHECKING:
    from core.analyses.arithmetic.analysis import Settings

Z95 = 1.96


def extract_answer(continuation: str) -> str:
    """The answer part of a continuation: up to the first newline or comma (lines never contain one inside an answer)."""
    return continuation.split("\n", 1)[0].split(",", 1)[0].strip()



@dataclass
class AccuracyResult:
    """Accuracy per numeral system on the same problems.

    ``frame`` columns: system, label, op, n, correct, accuracy (exact, in the prompt's system),
    ci_low, ci_high (Wilson 95%), value_accuracy (the right number in any system).
    ``outcomes`` columns: system, problem, operands, answer, expected, generated, parsed_value,
    parsed_system, correct, value_correct.
    """

    model: str
    settings: Settings
    frame: pd.DataFrame
    outcomes: pd.DataFrame

    def accuracy(self, system: str) -> float:
        return float(self.frame.set_index("system").loc[system, "accuracy"])


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``n`` trials (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _max_answer_tokens(tokenizer, problems: list[Problem], systems: Sequence[str]) -> int:
    longest = max(
        len(tokenizer(format_number(p.answer, s), add_special_tokens=False)["input_ids"]) for p in problems for s in systems
    )
    return longest + 2  # room for a trailing newline, or a space the model puts first


def evaluate_accuracy(
    handle: ModelHandle,
    settings: Settings,
    *,
    problems: list[Problem] | None = None,
    progress: Progress | None = None,
) -> AccuracyResult:
    """Greedy-decode every problem in every system of ``settings.systems``; correct = the answer reads,
    in the prompt's own system, as the right number (``numerals.parse_number``, exact after normalisation)."""
    systems = check_systems(settings.systems)
    problems = problems if problems is not None else generate_problems(settings)
    max_new = _max_answer_tokens(handle.tokenizer, problems, SYSTEM_KEYS)
    rows, summary = [], []
    prompts = [render_prompt(p, key, settings.surround) for key in systems for p in problems]
    every = greedy(handle, prompts, max_new, stop=("\n",), batch_size=settings.batch_size, progress=progress)
    for i, key in enumerate(systems):
        continuations = every[i * len(problems) : (i + 1) * len(problems)]
        correct = 0
        for index, (problem, continuation) in enumerate(zip(problems, continuations)):
            generated = extract_answer(continuation)
            own = parse_number(generated, key)
            anywhere = parse_any(generated)
            ok = own == problem.answer
            correct += ok
            rows.append(
                {
                    "system": key,
                    "problem": index,
                    "operands": " ".join(map(str, problem.operands)),
                    "answer": problem.answer,
                    "expected": format_number(problem.answer, key),
                    "generated": generated,
                    "parsed_value": own if own is not None else (anywhere[0] if anywhere else None),
                    "parsed_system": key if own is not None else (anywhere[1] if anywhere else None),
                    "correct": ok,
                    "value_correct": ok or (anywhere is not None and anywhere[0] == problem.answer),
                }
            )
        n = len(problems)
        low, high = wilson_interval(correct, n)
        value_ok = sum(r["value_correct"] for r in rows if r["system"] == key)
        summary.append(
            {
                "system": key, "label": SYSTEMS[key].label, "op": settings.op, "n": n, "correct": correct,
                "accuracy": correct / n, "ci_low": low, "ci_high": high, "value_accuracy": value_ok / n,
            }
        )
    return AccuracyResult(handle.spec, settings, pd.DataFrame(summary), pd.DataFrame(rows))


