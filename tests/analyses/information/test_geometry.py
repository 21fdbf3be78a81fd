"""Effective rank, anisotropy, outlier dimensions, PCA and translation retrieval on planted data with
known answers."""

import core  # noqa: F401  (before torch: passive OpenMP waiting on shared CPUs)
import torch

from core.analyses.information import geometry


def test_participation_ratio_is_d_for_isotropic_and_1_for_rank_one_data():
    g = torch.Generator().manual_seed(0)
    isotropic = torch.randn(4000, 16, generator=g)
    assert 15.5 < geometry.effective_rank(isotropic) <= 16  # sampling noise only lowers it (≈ d / (1 + d/n))
    direction = torch.randn(32, generator=g)
    rank_one = torch.randn(200, 1, generator=g) * direction + 5.0  # plus a constant offset: centring removes it
    assert abs(geometry.effective_rank(rank_one) - 1.0) < 1e-9
    two_equal = torch.cat([torch.randn(300, 1, generator=g), torch.randn(300, 1, generator=g)], 1) @ torch.eye(2, 8)
    assert 1.8 < geometry.effective_rank(two_equal) <= 2.0


def test_anisotropy_of_identical_vectors_is_1_and_of_random_ones_about_0():
    v = torch.tensor([3.0, -1.0, 2.0])
    assert abs(geometry.anisotropy(v.repeat(10, 1)) - 1.0) < 1e-12
    assert abs(geometry.anisotropy(torch.eye(6)) - 0.0) < 1e-12  # orthogonal: every pair 0
    assert abs(geometry.anisotropy(torch.stack([v, -v])) + 1.0) < 1e-12
    g = torch.Generator().manual_seed(1)
    assert abs(geometry.anisotropy(torch.randn(500, 256, generator=g))) < 0.01
    shifted = torch.randn(500, 256, generator=g) + 3.0  # a shared offset: anisotropic
    assert geometry.anisotropy(shifted) > 0.85


def test_anisotropy_equals_the_mean_over_all_pairs():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(2))
    u = x / x.norm(dim=-1, keepdim=True)
    cos = u @ u.T
    expected = (cos.sum() - cos.diagonal().sum()) / (40 * 39)
    assert abs(geometry.anisotropy(x) - float(expected)) < 1e-6


def test_outlier_dimension_and_the_token_that_carries_it():
    x = torch.randn(50, 32, generator=torch.Generator().manual_seed(3))
    x[7, 5] = -1000.0
    x[9, 5] = 400.0
    found = geometry.outlier_dimensions(x, layer=4)
    assert [(o.layer, o.dim) for o in found] == [(4, 5)]
    assert found[0].carriers[0] == (7, -1000.0) and found[0].carriers[1] == (9, 400.0)
    assert found[0].ratio > 100
    assert geometry.outlier_dimensions(torch.randn(50, 32), layer=0) == []  # Gaussian: no dimension 20x the median


def test_pca_separates_two_planted_clusters_despite_a_massive_dimension():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(100, 20, generator=g)
    x[:50, :10] += 3.0  # two clusters apart along a direction spread over 10 dimensions
    x[:, 15] *= 1000.0  # a massive dimension of pure noise: unscaled, it would be PC 1
    xy = geometry.pca_2d(x, seed=0)
    assert xy.shape == (100, 2)
    first, second = xy[:50, 0], xy[50:, 0]
    assert (first.min() > second.max()) or (first.max() < second.min())
    assert torch.equal(xy, geometry.pca_2d(x, seed=0))


def test_translation_retrieval_finds_shared_concepts_and_not_noise():
    g = torch.Generator().manual_seed(5)
    concepts = torch.randn(30, 64, generator=g)
    shared = concepts + 0.1 * torch.randn(3, 30, 64, generator=g)  # 3 languages, one meaning each
    hits = geometry.translation_retrieval(shared)
    assert hits.shape == (3, 3) and torch.isnan(hits.diagonal()).all()
    off = hits[~torch.eye(3, dtype=torch.bool)]
    assert (off == 1.0).all()
    unrelated = geometry.translation_retrieval(torch.randn(3, 30, 64, generator=g))
    assert unrelated[~torch.eye(3, dtype=torch.bool)].mean() < 0.2  # chance is 1/30
