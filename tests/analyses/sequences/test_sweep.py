"""The metric and the sweeps on tiny random models: exact ablation is the logit difference after each removal; attribution agrees for small changes."""

import numpy as np
import pytest
import torch

from core import interventions as iv
from core.analyses import sequences as sq
from tests import tiny
from tests.analyses.sequences.tiny_prompts import prepared


@pytest.mark.parametrize("family, style", [("gemma3", "sentencepiece"), ("gpt2", "gpt2")])
def test_token_logits_equal_the_models_logits(family, style):
    handle = tiny.handle(family, style=style)
    batch = handle.encode(["one two three", "Monday Tuesday Wed"])
    full = handle.logits(batch)[:, -1]  # with Gemma 3's final soft cap
    final = handle.residuals(batch)[-1][:, -1]
    ids = torch.tensor([[5, 9, 17], [3, 3, 40]])
    assert torch.allclose(handle.token_logits(final, ids), full.gather(1, ids), atol=1e-4)
    assert torch.allclose(handle.token_logits(final, torch.tensor([7, 8])), full[:, [7, 8]], atol=1e-4)


def test_exact_sweep_is_the_logit_difference_after_each_removal(llama):
    prep = prepared(llama)
    components = iv.heads(llama) + iv.mlps(llama)
    result = sq.exact_sweep(llama, prep, components, "mean")
    full = llama.logits(prep.batch)[:, -1]
    assert result.full_logit_diff == pytest.approx(float((full[:, prep.answers[:, 0]].diag() - full[:, prep.answers[:, 1]].diag()).mean()), abs=1e-4)
    assert len(result.heads) == 12 and len(result.mlps) == 3
    for c in (iv.Component(1, 2), iv.Component(2)):
        final = llama.forward_with(prep.batch, prep.values, [c])
        expected = float(sq.logit_diff(llama, final, prep.answers).mean().detach())
        table = result.mlps if c.is_mlp else result.heads
        row = table[table["component"] == c.label].iloc[0]
        assert row["logit_diff"] == pytest.approx(expected, abs=1e-4)
        assert row["pct_of_full"] == pytest.approx(100 * expected / result.full_logit_diff, rel=1e-6)
    assert sorted(result.heads["rank"]) == list(range(1, 13))
    assert result.heads.sort_values("rank")["change"].is_monotonic_increasing
    out = result.to_json()
    assert set(out) == {"model", "task", "n_prompts", "full_logit_diff", "heads", "mlps"}
    assert set(out["heads"][0]) == {"layer", "head", "logit_diff", "pct_of_full"} and len(out["heads"]) == 12
    assert set(out["mlps"][0]) == {"layer", "logit_diff", "pct_of_full"} and len(out["mlps"]) == 3


def test_attribution_sweep_shares_the_metric_and_ranks_like_exact_for_small_changes(llama):
    prep = prepared(llama)
    near = iv.Activations(prep.run.activations.heads + 0.01 * (prep.values.heads - prep.run.activations.heads),
                          prep.run.activations.mlps + 0.01 * (prep.values.mlps - prep.run.activations.mlps))
    prep_near = sq.Prepared(prep.prompts, prep.batch, prep.run, near, prep.answers)
    exact = sq.exact_sweep(llama, prep_near, iv.heads(llama) + iv.mlps(llama), "mean")
    estimate = sq.attribution_sweep(llama, prep_near, "mean")
    assert estimate.full_logit_diff == pytest.approx(exact.full_logit_diff, abs=1e-4)
    assert sq.spearman(exact.heads["change"], estimate.heads["change"]) > 0.95
    assert np.allclose(exact.heads["change"], estimate.heads["change"], atol=2e-3 + 0.05 * exact.heads["change"].abs().max())
