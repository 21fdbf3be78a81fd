"""Circuit search: pruning stays within the threshold and is stable; two circuits' overlap."""

import numpy as np
import pandas as pd
import pytest

from core import interventions as iv
from core.analyses import sequences as sq
from tests.analyses.sequences.tiny_prompts import prepared


def test_pruned_circuit_is_within_the_threshold_and_stable(llama):
    prep = prepared(llama)
    circuit = sq.prune(llama, prep, threshold=30)
    floor = 0.7 * circuit.full_logit_diff
    assert circuit.logit_diff >= floor - 1e-6 and circuit.pct_of_full >= 70 - 1e-4
    assert len(circuit.mlps) == 3  # MLPs are not pruned unless asked
    removed = set(iv.heads(llama)) - set(circuit.heads)
    assert removed, "a random model's heads should not all be needed"
    # stable: removing any remaining head now drops below the floor
    finals = llama.run_variants(prep.run, prep.values, [removed | {c} for c in circuit.heads])
    assert np.all(sq.mean_logit_diffs(llama, prep, finals) < floor)
    assert circuit.steps["removed"].sum() == len(removed)
    with_mlps = sq.prune(llama, prep, threshold=30, include_mlps=True)
    assert with_mlps.logit_diff >= floor - 1e-6


def test_overlap_of_two_circuits():
    a = sq.Circuit("numerals", 20, 5.0, 4.1, [iv.Component(1, 1), iv.Component(9, 3)], [], 3, pd.DataFrame())
    b = sq.Circuit("months", 20, 4.0, 3.5, [iv.Component(9, 3), iv.Component(2, 0), iv.Component(4, 1)], [], 3, pd.DataFrame())
    both = sq.overlap(a, b)
    assert both.shared == ["L9H3"] and both.only_a == ["L1H1"] and both.only_b == ["L2H0", "L4H1"]
    assert both.jaccard == pytest.approx(1 / 4)
    assert a.pct_of_full == pytest.approx(82.0)
    # MLPs count only when they were pruned: kept-by-default MLPs must not inflate the overlap
    a.mlps = b.mlps = [iv.Component(0), iv.Component(1)]
    assert sq.overlap(a, b).jaccard == pytest.approx(1 / 4)
    a.include_mlps = b.include_mlps = True
    assert sq.overlap(a, b).shared == ["L9H3", "MLP0", "MLP1"] and sq.overlap(a, b).jaccard == pytest.approx(3 / 6)
