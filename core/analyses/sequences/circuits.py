"""Circuit search (Lan & Barez): iterative pruning of heads (and optionally MLPs) within a threshold, and two tasks' overlap."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd

from core import interventions as iv
from core.analyses.sequences.sweep import Prepared, mean_logit_diffs, prepare
from core.analyses.sequences.tasks import build_prompts
from core.errors import UserError
from core.interventions import Component
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet

if TYPE_CHECKING:
    from core.analyses.sequences.analysis import Settings


@dataclass
class Circuit:
    """The components left after iterative pruning, and what they keep of the metric.

    ``steps`` columns: sweep, component, logit_diff (with it removed too), pct_of_full, removed (bool).
    """

    task: str
    threshold: float  # percent of the full metric allowed to be lost
    full_logit_diff: float
    logit_diff: float  # with every non-circuit component ablated
    heads: list[Component]
    mlps: list[Component]
    n_passes: int
    steps: pd.DataFrame
    n_prompts: int = 0
    include_mlps: bool = False  # whether MLPs were candidates for removal (else all kept)

    @property
    def pct_of_full(self) -> float:
        return 100.0 * self.logit_diff / self.full_logit_diff

    def frame(self, n_layers: int, n_heads: int) -> pd.DataFrame:
        """One row per head: layer, head, component, in_circuit."""
        keep = set(self.heads)
        return pd.DataFrame([(l, h, Component(l, h).label, Component(l, h) in keep)
                             for l in range(n_layers) for h in range(n_heads)],
                            columns=["layer", "head", "component", "in_circuit"])

    def labels(self) -> list[str]:
        """The searched components that survived: heads, and MLPs when they were pruned too."""
        return [c.label for c in self.heads + (self.mlps if self.include_mlps else [])]


def prune(handle: ModelHandle, prep: Prepared, threshold: float, include_mlps: bool = False,
          progress: Progress | None = None) -> Circuit:
    """Iterative pruning on prepared prompts (see ``find_circuit``), exactly sequential but batched: one pass
    evaluates removing the first 1, 2, … remaining candidates of a layer; every prefix above the floor is
    removed, the first that falls below is kept, and the pass repeats after it. So a layer costs one pass
    plus one per kept component, not one per candidate."""
    progress = progress or quiet
    full = float(mean_logit_diffs(handle, prep, prep.run.final.unsqueeze(0))[0])
    floor = (1 - threshold / 100.0) * full
    removed: set[Component] = set()
    steps, passes, sweep = [], 0, 0
    n_layers = handle.n_layers
    while True:
        sweep += 1
        changed = False
        for layer in reversed(range(n_layers)):
            progress(1 - 0.5 ** (sweep - 1) + 0.5 ** sweep * (n_layers - layer) / n_layers,
                     f"sweep {sweep}, layer {layer}: {len(removed)} removed")
            candidates = ([Component(layer)] if include_mlps else []) + [
                Component(layer, h) for h in reversed(range(handle.n_heads))]
            candidates = [c for c in candidates if c not in removed]
            while candidates:
                # Prefix i removes candidates[:i+1] on top of everything removed so far: exactly what the
                # sequential decision on candidates[i] evaluates if all before it were removed.
                prefixes = [removed | set(candidates[: i + 1]) for i in range(len(candidates))]
                diffs = mean_logit_diffs(handle, prep, handle.run_variants(prep.run, prep.values, prefixes))
                passes += 1
                fail = next((i for i, d in enumerate(diffs) if d < floor), len(candidates))
                for i, (c, d) in enumerate(zip(candidates[: fail + 1], diffs)):
                    steps.append((sweep, c.label, float(d), 100 * float(d) / full, i < fail))
                removed |= set(candidates[:fail])
                changed = changed or fail > 0
                candidates = candidates[fail + 1:]  # candidates[fail] stays; later ones need a new pass
        if not changed:
            break
    final = float(mean_logit_diffs(handle, prep, handle.run_variants(prep.run, prep.values, [removed]))[0])
    every = iv.heads(handle) + iv.mlps(handle)
    return Circuit(
        task=prep.prompts.task, threshold=threshold, full_logit_diff=full, logit_diff=final,
        heads=[c for c in every if not c.is_mlp and c not in removed],
        mlps=[c for c in every if c.is_mlp and c not in removed],
        n_passes=passes + 1,
        steps=pd.DataFrame(steps, columns=["sweep", "component", "logit_diff", "pct_of_full", "removed"]),
        n_prompts=len(prep.prompts.pairs),
        include_mlps=include_mlps,
    )


def find_circuit(handle: ModelHandle, settings: Settings, threshold: float = 20.0, include_mlps: bool = False,
                 progress: Progress | None = None) -> Circuit:
    """Iterative pruning (Lan & Barez): sweep layers from last to first, MLP then heads from last to first;
    remove a component for good when the metric (everything removed so far ablated too) stays at or
    above (100 − threshold)% of the full model's; repeat sweeps until nothing changes."""
    if not 0 < threshold < 100:
        raise UserError(f"the threshold is a percentage of the full metric, between 0 and 100 (got {threshold})")
    report = part(progress, 0, 1)
    report(0.0, "building prompts")
    prep = prepare(handle, build_prompts(handle, settings), settings.ablation, settings.seed)
    return prune(handle, prep, threshold, include_mlps, part(progress, 0.05, 1.0))


@dataclass
class CircuitComparison:
    """Two tasks' circuits and their overlap (heads; MLPs too when they were pruned)."""

    a: Circuit
    b: Circuit
    shared: list[str]
    only_a: list[str]
    only_b: list[str]

    @property
    def jaccard(self) -> float:
        union = len(self.shared) + len(self.only_a) + len(self.only_b)
        return len(self.shared) / union if union else float("nan")


def overlap(a: Circuit, b: Circuit) -> CircuitComparison:
    la, lb = a.labels(), b.labels()
    return CircuitComparison(a, b, [x for x in la if x in lb], [x for x in la if x not in lb], [x for x in lb if x not in la])


def compare_circuits(handle: ModelHandle, settings: Settings, other_task: str, threshold: float = 20.0,
                     include_mlps: bool = False, progress: Progress | None = None) -> CircuitComparison:
    """The circuits of ``settings.task`` and of ``other_task`` (same template and settings) and their overlap."""
    first = find_circuit(handle, settings, threshold, include_mlps, part(progress, 0, 0.5))
    second = find_circuit(handle, replace(settings, task=other_task, custom=""), threshold, include_mlps,
                          part(progress, 0.5, 1.0))
    return overlap(first, second)


def membership(found: Circuit | CircuitComparison, n_layers: int, n_heads: int) -> pd.DataFrame:
    """One row per head: layer, head, component, in_circuit (of the first circuit) and ``membership``:
    "in circuit"/"no" for one circuit; "both", "first task", "second task" or "no" for a comparison."""
    if isinstance(found, Circuit):
        frame = found.frame(n_layers, n_heads)
        frame["membership"] = frame["in_circuit"].map({True: "in circuit", False: "no"})
        return frame
    frame = found.a.frame(n_layers, n_heads)
    second = found.b.frame(n_layers, n_heads)["in_circuit"]
    frame["membership"] = [("both" if a and b else "first task" if a else "second task" if b else "no")
                           for a, b in zip(frame["in_circuit"], second)]
    return frame
