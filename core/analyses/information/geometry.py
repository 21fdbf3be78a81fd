"""The shape of a layer's representations: effective rank, anisotropy, outlier dimensions, a 2-D PCA,
and whether a word's translation is its nearest neighbour.

Every function takes one layer's vectors ``x`` [n, d] (or all layers' [layer, n, d]) and returns
numbers; none touches a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OUTLIER_RATIO = 20.0  # an outlier dimension's largest |value| is at least this many times the median dimension's


def effective_rank(x: torch.Tensor) -> float:
    """Participation ratio (Σλ)² / Σλ² of the eigenvalues λ of the centred covariance of x [n, d].

    From the n x n Gram matrix G of the centred rows: Σλ ∝ trace G and Σλ² ∝ ‖G‖²_F (the same
    non-zero spectrum as XᵀX), so no d x d matrix is needed. 1 for rank-1 data, d for isotropic data.
    """
    x = x.double()
    centred = x - x.mean(0, keepdim=True)
    gram = centred @ centred.T
    square = float((gram * gram).sum())
    return float(gram.trace()) ** 2 / square if square > 0 else 0.0


def anisotropy(x: torch.Tensor) -> float:
    """Mean cosine similarity of two different rows of x [n, d]: the expectation over random pairs, exactly.

    With unit rows u_i, Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − n. Zero vectors count as cosine 0.
    """
    x = x.double()
    n = x.shape[0]
    if n < 2:
        raise ValueError("anisotropy needs at least two vectors")
    norms = x.norm(dim=-1, keepdim=True)
    units = torch.where(norms > 0, x / norms.clamp_min(1e-300), torch.zeros_like(x))
    total = units.sum(0)
    self_terms = float((units * units).sum())
    return (float(total @ total) - self_terms) / (n * (n - 1))


@dataclass
class Outlier:
    """A dimension whose values dwarf the others' at one layer, and the tokens that carry it."""

    layer: int
    dim: int
    max_abs: float  # largest |value| over the sample
    ratio: float  # max_abs over the median dimension's largest |value|
    carriers: list[tuple[int, float]]  # (position, value) of the largest |values|, largest first


def outlier_dimensions(x: torch.Tensor, layer: int, top: int = 3, ratio: float = OUTLIER_RATIO,
                       limit: int = 8) -> list[Outlier]:
    """The (at most ``limit``) dimensions of x [n, d] whose largest |value| is ≥ ``ratio`` x the median dimension's."""
    peak = x.abs().max(0).values.double()  # [d]
    median = float(peak.median())
    if median <= 0:
        return []
    found = []
    for dim in peak.argsort(descending=True)[:limit].tolist():
        r = float(peak[dim]) / median
        if r < ratio:
            break
        values = x[:, dim]
        order = values.abs().argsort(descending=True)[:top].tolist()
        found.append(Outlier(layer, dim, float(peak[dim]), r, [(p, float(values[p])) for p in order]))
    return found


def pca_2d(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Coordinates [n, 2] of x [n, d] on its first two principal axes, each dimension first scaled to unit
    variance (else the outlier dimensions are the whole picture). Signs fixed: each axis's largest
    loading is positive, so the same data gives the same picture."""
    x = x.double()
    z = x - x.mean(0, keepdim=True)
    z = z / z.std(0, keepdim=True).clamp_min(1e-12)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(z, q=min(6, *z.shape), center=False, niter=4)
    axes = v[:, :2]
    flip = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return (z @ (axes * flip)).float()


def translation_retrieval(words: torch.Tensor) -> torch.Tensor:
    """How often a word's translation is its nearest neighbour, by cosine similarity.

    ``words`` [language, concept, d]: row (a, i) is concept i in language a. For every ordered pair of
    languages (a, b), a ≠ b, the share of concepts i whose most similar row of language b is (b, i).
    Returns [language, language] accuracies (NaN on the diagonal).
    """
    languages, concepts, _ = words.shape
    units = words.double()
    units = units / units.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    similarity = torch.einsum("aid,bjd->abij", units, units)  # [a, b, concept, candidate]
    hits = (similarity.argmax(-1) == torch.arange(concepts)).double().mean(-1)
    hits[torch.arange(languages), torch.arange(languages)] = float("nan")
    return hits
