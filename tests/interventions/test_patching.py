"""Attribution patching is the derivative of exact patching."""

import torch

from core import interventions as iv
from tests.interventions.batches import equal_length_batch


def test_attribution_is_the_derivative_of_exact_patching(handle):
    """Patching a + ε(v − a): exact change / ε → the attribution estimate as ε → 0."""
    batch = equal_length_batch(handle)
    corrupt = equal_length_batch(handle, seed=5)
    run = handle.record_run(batch)
    values = iv.replacement("resample", handle.capture(corrupt), 4)
    w = torch.randn(handle.d_model, generator=torch.Generator().manual_seed(0))

    def metric(final):
        return final.float() @ w

    est = handle.attribution(batch, values, metric)
    assert torch.allclose(est.metric, metric(run.final), atol=1e-4)
    eps = 1e-3
    clean = run.activations
    near = iv.Activations(clean.heads + eps * (values.heads - clean.heads), clean.mlps + eps * (values.mlps - clean.mlps))
    components = [iv.Component(0, 1), iv.Component(2, 3), iv.Component(1)]
    exact = handle.run_variants(run, near, [[c] for c in components])
    for c, final in zip(components, exact):
        change = (metric(final) - metric(run.final)).mean() / eps
        estimate = est.mlps[c.layer] if c.is_mlp else est.heads[c.layer, c.head]
        assert abs(float(change) - float(estimate)) <= 2e-2 * max(1.0, abs(float(estimate))), (c, change, estimate)
