"""The Sequence continuation analysis: which heads and MLPs carry ``1 2 3 4 `` → ``5`` (one prompt set, one or both methods).

Follows Lan & Barez, "Towards Interpretable Sequence Continuation" (arXiv 2311.04131): prompts from
``tasks``, the logit-difference metric and the sweeps from ``sweep``. The circuit search
(``circuits``) and the head inspector (``heads``) are further calls on the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core import interventions as iv
from core.analyses.base import Settings as BaseSettings
from core.analyses.sequences.sweep import (
    SeqResult, attribution_sweep, checked_by_attribution, exact_sweep, prepare, spearman, traced_sweep,
)
from core.analyses.sequences.tasks import TASKS, TEMPLATES, build_prompts
from core.errors import UserError
from core.interventions import check_ablation
from core.models.handle import ModelHandle
from core.progress import Progress, part

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

METHODS = ("ablation", "attribution", "both", "auto")
# "auto" (the page's default): exact ablation of every component when its estimated cost fits this budget
# (from this model's measured speed on these prompts), else attribution + exact checks.
EXACT_BUDGET_S = 60.0
DEFAULT_TOP_K = 12  # "auto" over budget without top_k: attribution's 12 highest, and 12 random others


@dataclass(frozen=True)
class Settings(BaseSettings):
    """Which prompts: a built-in task (``template`` bare or sentence, ``length`` shown members) or
    ``custom`` pairs (see ``tasks.parse_pairs``); ``n`` pairs; ``ablation`` mean, zero or resample.

    ``method``: "ablation" (exact, every head and MLP), "attribution" (the estimate only), "both"
    (attribution for all, and exact ablation of all, or with ``top_k`` of attribution's ``top_k``
    highest heads and MLPs plus ``top_k`` random others) or "auto" (attribution, then exact ablation of
    every component when its estimated cost fits ``EXACT_BUDGET_S``, else as "both" with ``top_k``).
    """

    task: str = "numerals"
    template: str = "bare"
    n: int = 8
    seed: int = 0
    length: int = 4
    first_token: bool = False
    custom: str = ""
    ablation: str = "mean"
    method: str = "ablation"
    top_k: int | None = None

    def validate(self) -> None:
        if not self.custom.strip() and self.task not in TASKS:
            raise UserError(f"unknown task '{self.task}': choose one of {', '.join(TASKS)}")
        if self.template not in TEMPLATES:
            raise UserError(f"unknown template '{self.template}': choose bare or sentence")
        check_ablation(self.ablation)
        _between(self.n, 1, 256, "the number of prompts")
        _between(self.length, 2, 10, "the sequence length (members shown before the answer)")
        if self.method not in METHODS:
            raise UserError(f"unknown method '{self.method}': choose ablation, attribution, both or auto")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"top-k must be at least 1 (or left out: exact ablation of every component), got {self.top_k}")

    def circuit_key(self) -> tuple:
        """What the circuit search depends on (everything but ``method`` and ``top_k``): pages key its result on it."""
        return (self.task, self.template, self.n, self.seed, self.length, self.first_token, self.custom, self.ablation)


def _between(value: int, lo: int, hi: int, what: str) -> None:
    if not lo <= value <= hi:
        raise UserError(f"{what} must be between {lo} and {hi}, got {value}")


@dataclass
class Result:
    """One run: the settings and the sweeps (``sweeps.prompts``, ``sweeps.exact``, ``sweeps.attribution``…)."""

    settings: Settings
    sweeps: SeqResult

    def to_json(self) -> dict:
        """The ``python -m core sequences`` contract: the main sweep (exact when it covers every head)."""
        return self.sweeps.main.to_json()

    def frames(self) -> dict[str, pd.DataFrame]:
        """``prompts`` (see ``PromptSet.frame``); ``ablation`` and/or ``attribution``: that sweep's heads
        and MLPs, largest drop first (see ``SweepResult.ranked``); ``comparison`` when both ran (see
        ``SeqResult.comparison``)."""
        frames = {"prompts": self.sweeps.prompts.frame()}
        for sweep in (self.sweeps.exact, self.sweeps.attribution):
            if sweep is not None:
                frames[sweep.method] = sweep.ranked()
        comparison = self.sweeps.comparison()
        if len(comparison):
            frames["comparison"] = comparison
        return frames


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None, *,
        budget_s: float = EXACT_BUDGET_S) -> Result:
    """Build the prompts and run ``settings.method`` (see ``Settings``); ``budget_s`` is "auto"'s budget.

    On a backend without recorded runs (nnsight traces, here or on NDIF) "ablation" and "auto" ablate every
    component exactly inside its traces (``handle.ablation_sweep``), and attribution (gradients) is refused."""
    settings.validate()
    method, top_k = settings.method, settings.top_k
    traced = not handle.supports("record_run")
    if traced and method in ("attribution", "both"):
        raise UserError(f"attribution patching needs gradients, which the {handle.backend_name} backend does not bring "
                        "back: use --method ablation (or auto) there, or --backend local")
    report = part(progress, 0, 1)
    report(0.0, "building prompts")
    prompts = build_prompts(handle, settings)
    report(0.1, f"{len(prompts.pairs)} prompt pairs; clean and corrupted runs")
    every = iv.heads(handle) + iv.mlps(handle)
    if traced:  # nnsight / NDIF: no gradients come back, so every component is ablated exactly there
        report(0.2, f"exact ablation of {len(every)} components in nnsight traces ({handle.backend_name})")
        exact = traced_sweep(handle, prompts, every, settings.ablation, settings.seed, progress=part(progress, 0.2, 1.0))
        report(1.0, "done")
        return Result(settings, SeqResult(prompts, exact, None, method="ablation"))
    prep = prepare(handle, prompts, settings.ablation, settings.seed)
    estimate = prep.exact_cost_s(handle, every)
    attribution = exact = None
    if method in ("attribution", "both", "auto"):
        report(0.15, "attribution patching: one forward and one backward pass")
        attribution = attribution_sweep(handle, prep, settings.ablation)
    ran = "both" if method == "auto" else method
    if method in ("ablation", "both", "auto"):
        components = every
        partial = (method == "both" and top_k) or (method == "auto" and estimate > budget_s)
        if partial:
            components = checked_by_attribution(attribution, int(top_k or DEFAULT_TOP_K), settings.seed)
        report(0.2, f"exact ablation of {len(components)} components (estimated {prep.exact_cost_s(handle, components):.0f} s)")
        exact = exact_sweep(handle, prep, components, settings.ablation, progress=part(progress, 0.2, 1.0))
    sweeps = SeqResult(prompts, exact, attribution, method=ran, exact_estimate_s=estimate)
    if exact is not None and attribution is not None:
        both = sweeps.comparison()
        sweeps.spearman_heads = spearman(both["exact_change"], both["attribution_change"])
        mlps = exact.mlps.merge(attribution.mlps, on="layer", suffixes=("_exact", "_attribution"))
        sweeps.spearman_mlps = spearman(mlps["change_exact"], mlps["change_attribution"])
    report(1.0, "done")
    return Result(settings, sweeps)
