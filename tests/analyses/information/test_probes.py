"""Probes on planted layers: a layer holding the token one-hot is decoded perfectly, noise is not, and the
mutual-information bound never exceeds H(token)."""

import core  # noqa: F401  (before torch: passive OpenMP waiting on shared CPUs)
import torch

from core.analyses.information.probes import entropy_bits, probe_tokens, token_classes


def planted(n: int = 240, vocab: int = 8, d: int = 24, seed: int = 0):
    """tokens [n] from a small vocabulary; layers [3, n, d]: 0 = current token one-hot, 1 = previous token
    one-hot, 2 = noise."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n + 1,), generator=g)
    current, previous = tokens[1:], tokens[:-1]
    layers = torch.randn(3, n, d, generator=g) * 0.05
    layers[0, torch.arange(n), current] += 1.0
    layers[1, torch.arange(n), previous] += 1.0
    layers[2] = torch.randn(n, d, generator=g)
    order = torch.randperm(n, generator=g)
    return layers, current, previous, order[: n // 2].sort().values, order[n // 2 :].sort().values


def test_one_hot_layer_is_decoded_and_noise_is_not():
    layers, current, previous, fit, score = planted()
    found = probe_tokens(layers[:1], current, fit, score)  # the current token one-hot
    assert found.n_classes == 8 and found.coverage == 1.0  # every token occurs twice in the fit half
    assert found.accuracy == [1.0]
    h = found.label_entropy_bits
    assert 2.9 < h <= 3.0  # 8 roughly equally likely tokens
    assert 0.6 * h < found.mutual_information_bits[0] <= h  # 120 fit rows: the penalty still costs bits
    noise = probe_tokens(layers[2:], current, fit, score)
    assert noise.accuracy[0] < 0.35 and noise.mutual_information_bits[0] < 0.1  # chance is 1/8
    back = probe_tokens(layers[:2], previous, fit, score)
    assert back.accuracy[1] == 1.0 and back.accuracy[0] < 0.35  # layer 1 holds the previous token
    assert all(b <= back.label_entropy_bits for b in back.mutual_information_bits)


def test_bound_approaches_the_entropy_as_fit_rows_grow():
    bounds = []
    for n in (240, 4000):
        layers, current, _, fit, score = planted(n=n)
        found = probe_tokens(layers[:1], current, fit, score)
        bounds.append(found.mutual_information_bits[0] / found.label_entropy_bits)
    assert bounds[0] < bounds[1] and bounds[1] > 0.95


def test_rare_tokens_go_to_the_other_class_and_are_not_counted():
    tokens = torch.tensor([5, 5, 7, 9, 9, 9, 11, 5])
    fit = torch.tensor([0, 1, 2, 3, 4, 5])
    classes, ids = token_classes(tokens, fit)
    assert ids == [5, 9]  # 7 occurs once in the fit rows, 11 never
    assert classes.tolist() == [0, 0, 2, 1, 1, 1, 2, 0]
    assert abs(entropy_bits(torch.tensor([0, 0, 1, 1]), 3) - 1.0) < 1e-12


def test_bound_never_exceeds_the_label_entropy_even_for_an_overfitting_probe():
    layers, current, _, fit, score = planted(n=60, vocab=20, d=64, seed=3)  # 64 dims, 30 fit rows
    found = probe_tokens(layers, current, fit, score)
    assert all(b <= found.label_entropy_bits for b in found.mutual_information_bits)
