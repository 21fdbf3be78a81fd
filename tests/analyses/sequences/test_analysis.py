"""The protocol: settings checked before any model work; ``run`` on the real default model (the page's
default, auto, and its partial exact check); the result's tables."""

import pytest

from core.analyses import sequences as sq
from core.errors import UserError


def test_settings_name_what_to_fix():
    sq.Settings().validate()
    sq.Settings(method="auto", top_k=12).validate()
    with pytest.raises(UserError, match="unknown method 'exact'"):
        sq.Settings(method="exact").validate()
    with pytest.raises(UserError, match="top-k must be at least 1"):
        sq.Settings(method="both", top_k=0).validate()
    with pytest.raises(UserError, match=r"\(members shown before the answer\) must be between 2 and 10, got 11"):
        sq.Settings(length=11).validate()
    assert sq.Settings(method="auto").circuit_key() == sq.Settings(method="attribution", top_k=3).circuit_key()
    assert sq.Settings(seed=1).circuit_key() != sq.Settings().circuit_key()


def test_default_run_headlines_the_head_exact_ablation_finds(gemma):
    """The page's default ("auto") ablates every head exactly when that is cheap: on the default model its
    headline is exact ablation's most important head, and ρ covers all 72 heads, not a subset attribution chose."""
    gemma.logits(gemma.encode(["1 2 3 4 "] * 8))  # a warm model, as on the page (the first pass of a process is slow)
    run = sq.run(gemma, sq.Settings(method="auto", top_k=12))
    result = run.sweeps
    assert result.exact_estimate_s < sq.EXACT_BUDGET_S and result.exact_is_complete, result.exact_estimate_s
    assert len(result.exact.heads) == 72 and result.unconfirmed_heads == []
    exact_best = result.exact.heads.sort_values("change").iloc[0]
    assert result.best_head()["component"] == exact_best["component"] == "L12H0"
    assert exact_best["pct_of_full"] < 10  # removing it leaves almost nothing of the logit difference
    assert len(result.comparison()) == 72 and -1 <= result.spearman_heads <= 1
    # the tables pages show and offer as CSV; the JSON is the exact sweep's (it covers every head)
    frames = run.frames()
    assert set(frames) == {"prompts", "ablation", "attribution", "comparison"}
    assert len(frames["prompts"]) == 8 and len(frames["ablation"]) == 72 + 18 == len(frames["attribution"])
    ranked = frames["ablation"]
    assert ranked["change"].is_monotonic_increasing and ranked[ranked["kind"] == "head"]["component"].iloc[0] == "L12H0"
    assert run.to_json() == result.exact.to_json()


def test_partial_exact_check_covers_random_heads_too(gemma):
    """When exact ablation of everything is over budget, attribution's top-k is checked plus k random heads,
    and the page can name every head left unconfirmed."""
    run = sq.run(gemma, sq.Settings(n=2, method="auto", top_k=4), budget_s=0.0)
    result = run.sweeps
    assert not result.exact_is_complete and len(result.exact.heads) == 8
    top4 = set(result.attribution.heads.nsmallest(4, "change")["component"])
    assert top4 < set(result.exact.heads["component"])
    assert len(result.unconfirmed_heads) == 72 - 8 and not top4 & set(result.unconfirmed_heads)
    assert len(result.comparison()) == 8
    assert run.to_json() == result.attribution.to_json()  # the estimate covers every head, the check does not
