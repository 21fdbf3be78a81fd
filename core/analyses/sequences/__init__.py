"""Sequence continuation (``1 2 3 4 `` → ``5``): which attention heads and MLPs carry it.

- ``tasks``: built-in tasks and the user's pairs → clean/corrupted prompts of equal token length;
- ``sweep``: the logit-difference metric, exact ablation and attribution-patching sweeps;
- ``analysis``: ``Settings`` → ``run`` → ``Result`` (the page's main run and ``python -m core sequences``);
- ``circuits``: iterative pruning and two tasks' overlap; ``heads``: successor scores, the head inspector;
- ``charts`` (Altair), ``command`` (the CLI).
"""

from core.analyses.sequences.analysis import EXACT_BUDGET_S, METHODS, Result, Settings, run
from core.analyses.sequences.circuits import Circuit, CircuitComparison, compare_circuits, find_circuit, membership, overlap, prune
from core.analyses.sequences.heads import (
    SUCCESSOR_SETS, HeadInspection, SuccessorScores, inspect_head, successor_scores, successor_tokens,
)
from core.analyses.sequences.sweep import (
    Prepared, SeqResult, SweepResult, attribution_sweep, exact_sweep, logit_diff, mean_logit_diffs, prepare, spearman,
)
from core.analyses.sequences.tasks import TASKS, TEMPLATES, PromptPair, PromptSet, Task, build_prompts, parse_pairs

__all__ = [
    "EXACT_BUDGET_S", "METHODS", "SUCCESSOR_SETS", "TASKS", "TEMPLATES", "Circuit", "CircuitComparison",
    "HeadInspection", "Prepared", "PromptPair", "PromptSet", "Result", "SeqResult", "Settings", "SuccessorScores",
    "SweepResult", "Task", "attribution_sweep", "build_prompts", "compare_circuits", "exact_sweep", "find_circuit",
    "inspect_head", "logit_diff", "mean_logit_diffs", "membership", "overlap", "parse_pairs", "prepare", "prune",
    "run", "spearman", "successor_scores", "successor_tokens",
]
