"""Linear probes: which token a layer's residual encodes, fitted on one split and scored on another.

A probe is a multinomial logistic regression (softmax regression) from standardized residual
vectors to token classes, one per layer, all layers fitted at once. Its classes are the tokens
that occur at least ``MIN_COUNT`` times in the fit split plus one "other" class for every other
token: over a 262k vocabulary most tokens of a few hundred are seen once or never, and a class
seen once cannot be learned. Because an L2-penalized linear model's optimal weights lie in the span
of its training vectors, the features are first projected onto that span (exact, and the fit then
costs [n_fit x n_fit] instead of [n_fit x d_model]). The penalty is fixed (see ``PENALTY``); the score
split is never looked at until scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_COUNT = 2  # a token is a probe class when it occurs at least this often in the fit split
# L2 strength on standardized features against the cross-entropy SUMMED over the fit rows: more rows,
# relatively less penalty, so a probe of a layer that holds the token approaches H(token) as data grows.
# For Gemma 3 on 200 fit rows it is 0.1 per row, what 2-fold cross-validation inside the fit rows chose
# for 52 of 57 (layer, probe) pairs. Cross-validation is not run each time: on folds of half the rows it
# is noisy (bounds jumped by 0.6 bit between neighbouring layers) and biased towards larger penalties.
PENALTY = 20.0
ITERATIONS = 40  # with HISTORY 10 in float32: bounds within ~0.1 bit of 60 float64 steps on Gemma 3, 4x faster
HISTORY = 10
LN2 = math.log(2.0)


@dataclass
class ProbeScore:
    """One probe (e.g. "the current token") scored on the score split, per layer."""

    accuracy: list[float]  # top-1 accuracy over score positions whose token is a probe class
    cross_entropy_bits: list[float]  # mean -log2 q(class) over every score position ("other" included)
    label_entropy_bits: float  # plug-in entropy of the score split's classes ("other" included)
    n_classes: int  # token classes, "other" not counted
    coverage: float  # fraction of score positions whose token is a probe class
    penalty: list[float]  # the L2 strength per fit row, per layer

    @property
    def mutual_information_bits(self) -> list[float]:
        """H(class) - CE(probe): a lower bound on I(residual; token) (data processing: classes coarsen tokens)."""
        return [self.label_entropy_bits - ce for ce in self.cross_entropy_bits]


def token_classes(tokens: torch.Tensor, fit: torch.Tensor, min_count: int = MIN_COUNT) -> tuple[torch.Tensor, list[int]]:
    """(class of every position [n], the token id of each class); class len(ids) = "other"."""
    ids, counts = tokens[fit].unique(return_counts=True)
    kept = ids[counts >= min_count]
    classes = torch.full_like(tokens, len(kept))
    for k, token in enumerate(kept.tolist()):
        classes[tokens == token] = k
    return classes, kept.tolist()


def entropy_bits(classes: torch.Tensor, n_classes: int) -> float:
    counts = torch.bincount(classes, minlength=n_classes).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def _features(x: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
    """Standardize x [layer, n, d] with the fit split's mean and std, then project onto the fit span."""
    x = x.double()  # float64 for the SVD; the fit itself runs in float32
    mean = x[:, fit].mean(1, keepdim=True)
    std = x[:, fit].std(1, keepdim=True).clamp_min(1e-8)
    z = (x - mean) / std
    # Right singular vectors of each layer's fit block: z_fit = U S Vᵀ, span = columns of V.
    _, s, vh = torch.linalg.svd(z[:, fit], full_matrices=False)  # vh [layer, r, d]
    keep = s > s[:, :1] * 1e-9
    return ((z @ vh.transpose(1, 2)) * keep[:, None, :]).float()


def _fit(z: torch.Tensor, y: torch.Tensor, n_classes: int, penalty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [probe, r, C] and biases [probe, 1, C] minimizing mean CE + penalty[probe] * |W|², by LBFGS
    (``penalty`` per row: ``PENALTY / n`` for a probe).

    ``z`` [probe, n, r] and ``y`` [probe, n]: independent problems (layers, folds, penalties) fitted at
    once: the summed loss's gradient for one probe's weights is that probe's own.
    """
    probes, n, r = z.shape
    weight = torch.zeros(probes, r, n_classes, dtype=z.dtype, requires_grad=True)
    bias = torch.zeros(probes, 1, n_classes, dtype=z.dtype, requires_grad=True)
    target = y.reshape(-1)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=ITERATIONS, history_size=HISTORY,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        logits = z @ weight + bias
        loss = F.cross_entropy(logits.reshape(-1, n_classes), target, reduction="sum") / n
        loss = loss + (penalty.view(-1, 1, 1) * weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _cross_entropy(z, y, weight, bias) -> torch.Tensor:
    """Mean cross-entropy in nats per probe [probe]; ``y`` [probe, n]."""
    logits = z @ weight + bias
    probes, n, c = logits.shape
    return F.cross_entropy(logits.reshape(-1, c), y.reshape(-1), reduction="none").view(probes, n).mean(1)


def probe_tokens(residual: torch.Tensor, tokens: torch.Tensor, fit: torch.Tensor, score: torch.Tensor) -> ProbeScore:
    """Fit a probe from ``residual`` [layer, n, d] to ``tokens`` [n] on rows ``fit``, score it on rows ``score``."""
    if residual.shape[1] != tokens.shape[0]:
        raise ValueError(f"residual has {residual.shape[1]} positions but there are {tokens.shape[0]} tokens")
    classes, ids = token_classes(tokens, fit)
    n_classes = len(ids) + 1
    other = len(ids)
    z = _features(residual, fit)
    layers = residual.shape[0]
    penalty = torch.full((layers,), PENALTY / len(fit), dtype=z.dtype)
    weight, bias = _fit(z[:, fit], classes[fit].expand(layers, -1), n_classes, penalty)
    y = classes[score]
    cross_entropy = _cross_entropy(z[:, score], y.expand(layers, -1), weight, bias) / LN2
    predicted = (z[:, score] @ weight + bias).argmax(-1)  # [layer, n_score]
    named = y != other
    hits = ((predicted == y) & named).sum(1).double()
    accuracy = (hits / named.sum().clamp_min(1)).tolist() if named.any() else [0.0] * residual.shape[0]
    return ProbeScore(
        accuracy=[float(a) for a in accuracy],
        cross_entropy_bits=[float(c) for c in cross_entropy],
        label_entropy_bits=entropy_bits(y, n_classes),
        n_classes=len(ids),
        coverage=float(named.double().mean()),
        penalty=[float(p) for p in penalty],
    )
