"""Numerals and arithmetic: does a model compute in Western digits when the problem is written otherwise?

The same seeded few-shot problems (``problems``) are written in every numeral system of
``numerals``. ``run`` gives, in one call, the greedy accuracy of every system in
``Settings.systems`` (``accuracy``) and the layer profile of the problems written in
``Settings.lens_numerals`` (``profile``): per layer, the lens probability of the answer's first
character written in every system, and where the answer becomes top-1. ``drill_down`` is the
lens of one problem of a run, every layer and the query line's positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.analyses.arithmetic.accuracy import AccuracyResult, evaluate_accuracy
from core.analyses.arithmetic.numerals import MAX_NUMBER, SYSTEM_KEYS, token_system
from core.analyses.arithmetic.problems import OP_LABELS, OPS, SURROUNDS, Problem, check_systems, generate_problems, render_prompt
from core.analyses.arithmetic.profile import LayerProfile, layer_profile
from core.analyses.base import Settings as BaseSettings
from core.errors import UserError
from core.lens import LensResult, run_lens
from core.lenses import LENS_NAMES, lens_for
from core.models.handle import ModelHandle
from core.progress import Progress, part

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers


@dataclass(frozen=True)
class Settings(BaseSettings):
    """Which problems: operation, operand range [lo, hi], how many, shots per prompt, seed, surrounding
    text; ``systems``: the numeral systems whose accuracy is scored; ``lens_numerals``: the system the
    layer profile's problems are written in; ``top_k`` tokens kept per layer; prompts per forward pass."""

    op: str = "add"
    lo: int = 1
    hi: int = 9
    n: int = 50
    shots: int = 4
    seed: int = 0
    surround: str = "none"
    systems: tuple[str, ...] = SYSTEM_KEYS
    lens_numerals: str = "devanagari"
    top_k: int = 10
    batch_size: int = 16
    lens: str = "logit"  # "logit" | "tuned"

    @staticmethod
    def digit_range(digits: int) -> tuple[int, int]:
        """Operands with exactly ``digits`` digits (1 -> 1..9, 2 -> 10..99)."""
        if not 1 <= digits <= 6:
            raise UserError(f"--digits must be between 1 and 6, got {digits}")
        return (10 ** (digits - 1), 10**digits - 1)

    @property
    def max_answer(self) -> int:
        return {"add": 2 * self.hi, "sub": self.hi - self.lo, "mul": self.hi * self.hi, "next": self.hi + 3}[self.op]

    def validate_problems(self) -> None:
        """The problem fields only (what ``generate_problems`` needs)."""
        if self.op not in OPS:
            raise UserError(f"unknown operation '{self.op}': choose one of {', '.join(OPS)}")
        if self.surround not in SURROUNDS:
            raise UserError(f"unknown surrounding text '{self.surround}': choose one of {', '.join(SURROUNDS)}")
        if not 0 <= self.lo <= self.hi:
            raise UserError(f"the operand range must satisfy 0 <= min <= max, got {self.lo}..{self.hi}")
        if self.max_answer > MAX_NUMBER:
            raise UserError(
                f"answers of {OP_LABELS[self.op]} on {self.lo}..{self.hi} reach {self.max_answer}, but numbers are "
                f"written only up to {MAX_NUMBER}: choose smaller operands"
            )
        if not 1 <= self.n <= 5000:
            raise UserError(f"the number of problems must be between 1 and 5000, got {self.n}")
        if not 0 <= self.shots <= 32:
            raise UserError(f"shots (solved examples per prompt) must be between 0 and 32, got {self.shots}")

    def validate(self) -> None:
        self.validate_problems()
        check_systems(self.systems)
        if self.lens not in LENS_NAMES:
            raise UserError(f"unknown lens '{self.lens}': choose one of {', '.join(LENS_NAMES)}")
        check_systems([self.lens_numerals])  # top_k: run_lens checks it against the model's vocabulary
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")


@dataclass
class Result:
    """Accuracy of every scored system on the same problems, and the layer profile of the problems
    written in ``settings.lens_numerals``."""

    settings: Settings
    problems: list[Problem]
    accuracy: AccuracyResult
    profile: LayerProfile

    @property
    def model(self) -> str:
        return self.accuracy.model

    def to_json(self) -> dict:
        """The ``python -m core arithmetic`` contract; ``accuracy`` is that of ``lens_numerals`` (None
        when that system was not scored)."""
        numerals = self.settings.lens_numerals
        scored = numerals in set(self.accuracy.frame["system"])
        return {
            "model": self.model,
            "numerals": numerals,
            "op": self.settings.op,
            "n": len(self.problems),
            "accuracy": self.accuracy.accuracy(numerals) if scored else None,
            "layers": self.profile.layers_json(),
            "first_correct_layer": self.profile.first_correct_layer,
        }

    def frames(self) -> dict[str, pd.DataFrame]:
        """``accuracy`` (``AccuracyResult.frame``), ``answers`` (``AccuracyResult.outcomes``), ``layers``
        (``LayerProfile.frame`` with each layer's ``top1_rate``), ``problems`` (``LayerProfile.problems_frame``)."""
        return {
            "accuracy": self.accuracy.frame,
            "answers": self.accuracy.outcomes,
            "layers": self.profile.frame().merge(self.profile.top1_rate(), on="layer"),
            "problems": self.profile.problems_frame(),
        }


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    """The accuracy of every system in ``settings.systems`` and the layer profile (tracking the answer in
    every system) of the problems written in ``settings.lens_numerals``: the same problems for both."""
    settings.validate()
    if handle.reductions_only:
        raise UserError("arithmetic scores greedy answers, which are not generated on NDIF yet (NDIF runs the lens, "
                        "translation and the head sweep): use --backend local or nnsight")
    problems = generate_problems(settings)
    n_systems = len(check_systems(settings.systems))
    weight = n_systems / (n_systems + 1)  # one greedy pass per scored system, one lens pass
    accuracy = evaluate_accuracy(handle, settings, problems=problems, progress=part(progress, 0.0, weight))
    profile = layer_profile(handle, settings, problems=problems, progress=part(progress, weight, 1.0))
    return Result(settings, problems, accuracy, profile)


# -- one problem in detail -----------------------------------------------------------------------


@dataclass
class DrillDown:
    """The lens of one problem: ``lens`` covers the query line's positions, the last being the answer position."""

    problem: Problem
    numerals: str
    prompt: str
    lens: LensResult

    def top_frame(self) -> pd.DataFrame:
        """Top-k at the answer position: layer, rank, token, token_id, prob, system (``numerals.token_system``)."""
        slot = len(self.lens.positions[0]) - 1
        rows = []
        for layer in self.lens.layers:
            for rank, (token, tid, p) in enumerate(
                zip(self.lens.top_tokens[layer][0][slot], self.lens.top_ids[layer, 0, slot], self.lens.top_probs[layer, 0, slot]),
                start=1,
            ):
                rows.append({"layer": layer, "rank": rank, "token": token, "token_id": int(tid), "prob": float(p),
                             "system": token_system(token)})
        return pd.DataFrame(rows)


def drill_down(handle: ModelHandle, result: Result, index: int, *, top_k: int = 10) -> DrillDown:
    """Every layer at every position of the query line (the last line) of problem ``index`` of ``result``,
    written as the layer profile's problems are (``lens_numerals``, ``surround``)."""
    if not 0 <= index < len(result.problems):
        raise UserError(f"problem {index} is not one of the {len(result.problems)} problems of this run")
    problem, numerals = result.problems[index], result.settings.lens_numerals
    prompt = render_prompt(problem, numerals, result.settings.surround)
    total = len(handle.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    head = prompt[: prompt.rfind("\n") + 1]
    start = len(handle.tokenizer(head, add_special_tokens=True)["input_ids"]) if head else 0
    start = min(max(start, 0), total - 1)
    lens = run_lens(handle, prompt, positions=list(range(start, total)), top_k=top_k,
                    lens=lens_for(handle, result.settings.lens))
    return DrillDown(problem, numerals, prompt, lens)
