"""The metric and the sweeps: how much of the logit difference is left when each head or MLP is removed.

- metric: logit difference logit(correct) − logit(incorrect) at the last position, mean over prompts;
  an intervention is reported as its percentage of the unablated model's (``pct_of_full``).
- ``exact_sweep``: exact ablation of chosen heads and MLPs, many per batched pass (``core.interventions``);
  ``traced_sweep``: the same through nnsight traces (``--backend nnsight`` or ``ndif``), logit differences only;
  ``attribution_sweep``: attribution patching of every head and MLP from one forward/backward pair.
- ``SeqResult``: one or both sweeps of one prompt set, their comparison and rank correlation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from core import interventions as iv
from core.analyses.sequences.tasks import PromptSet
from core.interventions import Component
from core.models.handle import ModelHandle
from core.progress import Progress


# -- metric ----------------------------------------------------------------------------------------------


def logit_diff(handle: ModelHandle, residual: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """logit(correct) − logit(incorrect) per row: ``residual`` [n, d_model], ``answers`` [n, 2]."""
    logits = handle.token_logits(residual, answers)
    return logits[:, 0] - logits[:, 1]


# -- ablation sweeps -------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """The metric after removing each component, by exact ablation or its attribution-patching estimate.

    ``heads`` columns: layer, head, component, logit_diff (mean over prompts, after removal), pct_of_full
    (100 · logit_diff / full_logit_diff), change (logit_diff − full_logit_diff), rank (1 = largest drop).
    ``mlps`` columns: layer, component, logit_diff, pct_of_full, change, rank.
    """

    model: str
    task: str
    method: str  # "ablation" | "attribution"
    ablation: str  # "mean" | "zero" | "resample"
    n_prompts: int
    full_logit_diff: float
    heads: pd.DataFrame
    mlps: pd.DataFrame
    seconds: float

    def to_json(self) -> dict:
        """The CLI contract of ``python -m core seq``."""
        return {
            "model": self.model,
            "task": self.task,
            "n_prompts": self.n_prompts,
            "full_logit_diff": round(self.full_logit_diff, 4),
            "heads": [
                {"layer": int(r.layer), "head": int(r.head), "logit_diff": round(float(r.logit_diff), 4),
                 "pct_of_full": round(float(r.pct_of_full), 2)}
                for r in self.heads.sort_values(["layer", "head"]).itertuples()
            ],
            "mlps": [
                {"layer": int(r.layer), "logit_diff": round(float(r.logit_diff), 4), "pct_of_full": round(float(r.pct_of_full), 2)}
                for r in self.mlps.sort_values("layer").itertuples()
            ],
        }

    def ranked(self) -> pd.DataFrame:
        """Heads and MLPs together, largest drop first."""
        both = pd.concat([self.heads.assign(kind="head"), self.mlps.assign(head=-1, kind="mlp")], ignore_index=True)
        return both.sort_values("change").reset_index(drop=True)[
            ["component", "kind", "layer", "head", "logit_diff", "pct_of_full", "change"]]


def _frames(components: list[Component], values: np.ndarray, full: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [(c.layer, c.head, c.label, float(v), 100.0 * float(v) / full, float(v) - full, c.is_mlp)
            for c, v in zip(components, values)]
    frame = pd.DataFrame(rows, columns=["layer", "head", "component", "logit_diff", "pct_of_full", "change", "is_mlp"])
    out = []
    for is_mlp in (False, True):
        part = frame[frame["is_mlp"] == is_mlp].drop(columns="is_mlp").reset_index(drop=True)
        part["rank"] = part["change"].rank(method="first").astype(int)
        out.append(part if not is_mlp else part.drop(columns="head"))
    return out[0], out[1]


@dataclass
class Prepared:
    """A prompt set run once: the recorded clean pass, the replacement values and the answer ids [pair, 2]."""

    prompts: PromptSet
    batch: object
    run: iv.CleanRun
    values: iv.Activations
    answers: torch.Tensor
    clean_seconds: float = 0.0  # one recorded forward pass of the clean prompts: the unit of exact cost

    def exact_cost_s(self, handle: ModelHandle, components: Sequence[Component]) -> float:
        """Estimated seconds to ablate each component exactly: every variant resumes at its layer, so it
        costs the part of a forward pass from there on."""
        return self.clean_seconds * sum((handle.n_layers - c.layer) / handle.n_layers for c in components)


def prepare(handle: ModelHandle, prompts: PromptSet, ablation: str, seed: int = 0) -> Prepared:
    """Run the clean prompts (recorded) and the corrupted ones (their activations give the replacement values)."""
    batch = handle.encode(prompts.clean)
    # The unit of exact cost: one forward pass of these prompts, the faster of the two timed here (the clean
    # and the corrupted pass cost the same). On a CPU it is counted in CPU seconds per torch thread, what
    # the pass takes when nothing else shares the machine, so other users' load does not flip the choice;
    # on an accelerator, in wall seconds (its work is not CPU time).
    on_cpu = handle.input_device.type == "cpu"
    clock = time.process_time if on_cpu else time.perf_counter
    started = clock()
    run = handle.record_run(batch)
    middle = clock()
    corrupt = handle.capture(handle.encode(prompts.corrupt))
    clean_seconds = min(middle - started, clock() - middle) / (max(1, torch.get_num_threads()) if on_cpu else 1)
    values = iv.replacement(ablation, corrupt, len(prompts.pairs), seed)
    return Prepared(prompts, batch, run, values, prompts.answer_ids(), clean_seconds)


def mean_logit_diffs(handle: ModelHandle, prep: Prepared, finals: torch.Tensor) -> np.ndarray:
    """finals [variant, batch, d_model] -> mean logit difference per variant."""
    v, b, d = finals.shape
    with torch.inference_mode():
        diffs = logit_diff(handle, finals.reshape(v * b, d), prep.answers.repeat(v, 1)).reshape(v, b)
    return diffs.mean(1).cpu().numpy()


def exact_sweep(handle: ModelHandle, prep: Prepared, components: list[Component], ablation: str,
                progress: Progress | None = None, max_tokens: int = 4096) -> SweepResult:
    """Exact ablation of each component, many per batched pass."""
    start = time.perf_counter()
    finals = handle.run_variants(prep.run, prep.values, [[c] for c in components], max_tokens=max_tokens,
                             progress=progress)
    full = float(mean_logit_diffs(handle, prep, prep.run.final.unsqueeze(0))[0])
    values = mean_logit_diffs(handle, prep, finals)
    heads_df, mlps_df = _frames(components, values, full)
    return SweepResult(handle.spec, prep.prompts.task, "ablation", ablation, len(prep.prompts.pairs), full,
                       heads_df, mlps_df, time.perf_counter() - start)


def traced_sweep(handle: ModelHandle, prompts: PromptSet, components: list[Component], ablation: str, seed: int = 0,
                 progress: Progress | None = None, max_tokens: int = 4096) -> SweepResult:
    """``exact_sweep`` through nnsight traces (here, or on NDIF): each component ablated inside a trace, only
    the mean logit differences coming back (``handle.ablation_sweep``)."""
    start = time.perf_counter()
    traced = handle.ablation_sweep(handle.encode(prompts.clean), handle.encode(prompts.corrupt), prompts.answer_ids(),
                            [[c] for c in components], ablation, seed, max_tokens=max_tokens, progress=progress)
    heads_df, mlps_df = _frames(components, traced.ablated, traced.full)
    return SweepResult(handle.spec, prompts.task, "ablation", ablation, len(prompts.pairs), traced.full,
                       heads_df, mlps_df, time.perf_counter() - start)


def attribution_sweep(handle: ModelHandle, prep: Prepared, ablation: str) -> SweepResult:
    """Attribution patching: every head and MLP from one forward/backward pair on the clean prompts."""
    start = time.perf_counter()
    answers = prep.answers
    est = handle.attribution(prep.batch, prep.values, lambda final: logit_diff(handle, final, answers))
    full = float(est.metric.mean())
    components = iv.heads(handle) + iv.mlps(handle)
    values = [full + float(est.mlps[c.layer] if c.is_mlp else est.heads[c.layer, c.head]) for c in components]
    heads_df, mlps_df = _frames(components, np.array(values), full)
    return SweepResult(handle.spec, prep.prompts.task, "attribution", ablation, len(prep.prompts.pairs), full,
                       heads_df, mlps_df, time.perf_counter() - start)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (Spearman's ρ); NaN when either side is constant or has fewer than 3 values."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


@dataclass
class SeqResult:
    """The sweeps of one run (``analysis.Result.sweeps``): the prompts and one or both sweeps.

    ``exact`` covers every head and MLP, or (when exact ablation of all was too slow, or ``top_k`` was
    asked for) the ``top_k`` heads and MLPs attribution ranked highest plus as many others drawn at
    random by the seed; ``spearman_heads`` is the rank correlation of the two methods over every head
    measured exactly, so it is never computed only on heads the estimate picked itself.
    ``exact_estimate_s`` is the estimated cost of exact ablation of every component; ``method`` says
    which method ran ("ablation", "attribution" or "both").
    """

    prompts: PromptSet
    exact: SweepResult | None
    attribution: SweepResult | None
    spearman_heads: float | None = None
    spearman_mlps: float | None = None
    method: str = "ablation"
    exact_estimate_s: float | None = None

    @property
    def exact_is_complete(self) -> bool:
        return self.exact is not None and (self.attribution is None or len(self.exact.heads) == len(self.attribution.heads))

    @property
    def main(self) -> SweepResult:
        return self.exact if self.exact_is_complete else self.attribution

    @property
    def unconfirmed_heads(self) -> list[str]:
        """Heads only attribution estimated (empty when exact ablation covered every head)."""
        if self.attribution is None:
            return []
        exact = set() if self.exact is None else set(self.exact.heads["component"])
        ranked = self.attribution.heads.sort_values("change")["component"]
        return [c for c in ranked if c not in exact]

    def best_head(self) -> pd.Series:
        """The head whose removal lowers the metric most, measured exactly wherever exact ablation ran."""
        return (self.exact or self.attribution).heads.sort_values("change").iloc[0]

    def comparison(self) -> pd.DataFrame:
        """Heads both methods cover. Columns: layer, head, component, exact_change, attribution_change,
        exact_pct, attribution_pct."""
        if self.exact is None or self.attribution is None:
            return pd.DataFrame()
        cols = ["layer", "head", "component", "change", "pct_of_full"]
        merged = self.exact.heads[cols].merge(self.attribution.heads[cols], on=["layer", "head", "component"],
                                              suffixes=("_exact", "_attribution"))
        return merged.rename(columns={"change_exact": "exact_change", "change_attribution": "attribution_change",
                                      "pct_of_full_exact": "exact_pct", "pct_of_full_attribution": "attribution_pct"})


def checked_by_attribution(attribution: SweepResult, top_k: int, seed: int) -> list[Component]:
    """The ``top_k`` heads and MLPs attribution ranks highest, plus as many others drawn at random (seeded),
    so that the comparison of the two methods also covers heads the estimate did not pick."""
    chosen = []
    for frame, is_mlp in ((attribution.heads, False), (attribution.mlps, True)):
        order = frame.sort_values("change")
        top, rest = order.iloc[:top_k], order.iloc[top_k:]
        sample = rest.sample(n=min(top_k, len(rest)), random_state=seed) if len(rest) else rest
        for r in pd.concat([top, sample]).itertuples():
            chosen.append(Component(int(r.layer)) if is_mlp else Component(int(r.layer), int(r.head)))
    return chosen
