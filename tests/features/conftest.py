"""Random dictionaries and synthetic activations for the feature tests."""

import pytest
import torch

from core.features import Dictionary


def random_dictionary(d_in=16, width=48, activation="topk", kind="sae", skip=False, seed=0, d_out=None, **meta):
    """A dictionary with random weights (unit decoder rows scaled a little), every optional tensor it needs."""
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    W_dec = torch.randn(width, d_out, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * (1 + torch.rand(width, 1, generator=g))
    fields = dict(W_enc=torch.randn(d_in, width, generator=g) / d_in ** 0.5,
                  b_enc=torch.randn(width, generator=g) * 0.1, W_dec=W_dec,
                  b_dec=torch.randn(d_out, generator=g) * 0.1, activation=activation, kind=kind)
    if activation in ("topk", "batchtopk"):
        fields["k"] = 5
    if activation in ("jumprelu", "batchtopk"):
        fields["threshold"] = torch.rand(width, generator=g) * 0.3
    if skip:
        fields["W_skip"] = torch.randn(d_in, d_out, generator=g) * 0.1
    if kind == "transcoder":
        fields.update(site="mlp_in", site_out="mlp_out")
    fields.update(meta)
    return Dictionary(**fields)


def sparse_activations(n, d=64, m=256, active=3, seed=0, noise=0.01, generator_seed=None):
    """x [n, d] = sparse non-negative combinations of m random unit directions [m, d] (``active`` on average) + noise.

    Returns (x, directions, coefficients [n, m]). Directions depend on ``seed`` only, tokens on ``generator_seed``.
    """
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(m, d, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)
    if generator_seed is not None:
        g = torch.Generator().manual_seed(generator_seed)
    on = torch.rand(n, m, generator=g) < active / m
    coefficients = on * (torch.rand(n, m, generator=g) * 1.5 + 0.5)
    return coefficients @ directions + noise * torch.randn(n, d, generator=g), directions, coefficients


@pytest.fixture
def inputs():
    return torch.randn(200, 16, generator=torch.Generator().manual_seed(9))
