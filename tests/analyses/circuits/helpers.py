"""Transcoders for tiny models, made in milliseconds: random ones, and ones that are exact on one prompt."""

from __future__ import annotations

from pathlib import Path

import torch

from core.analyses.circuits.transcoders import Transcoders
from core.features import Dictionary, save_dictionary
from core.models.sites import Site


def random_transcoders(handle, width: int = 48, k: int = 6, skip: bool = False, seed: int = 0,
                       d_model: int | None = None) -> Transcoders:
    """TopK transcoders with random weights for every block (``skip``: with an affine skip W_skip)."""
    generator = torch.Generator().manual_seed(seed)
    d = d_model or handle.d_model
    layers = []
    for i in range(handle.n_layers):
        layers.append(Dictionary(
            W_enc=torch.randn(d, width, generator=generator) / d ** 0.5, b_enc=torch.zeros(width),
            W_dec=torch.randn(width, d, generator=generator), b_dec=0.1 * torch.randn(d, generator=generator),
            W_skip=0.05 * torch.randn(d, d, generator=generator) if skip else None, activation="topk", k=k,
            kind="transcoder", site="mlp_in", site_out="mlp_out", layer=i + 1, model=handle.spec, d_model=d))
    return Transcoders(layers, "random")


def exact_transcoders(handle, prompt: str) -> Transcoders:
    """ReLU transcoders that reproduce every MLP exactly on ``prompt``: one latent per position, its encoder the
    pseudo-inverse of the prompt's MLP inputs (so latent t is 1 at position t and 0 elsewhere), its decoder row the MLP's
    output there. Identity-like on that prompt: the error nodes are zero."""
    batch = handle.encode([prompt])
    sites = [Site(kind, i) for i in range(handle.n_layers) for kind in ("mlp_in", "mlp_out")]
    seen = handle.record(batch, sites)
    layers = []
    for i in range(handle.n_layers):
        x, y = seen[Site("mlp_in", i)][0].double(), seen[Site("mlp_out", i)][0].double()
        layers.append(Dictionary(W_enc=torch.linalg.pinv(x).float(), b_enc=torch.zeros(len(x)), W_dec=y.float(),
                                 b_dec=torch.zeros(handle.d_model), activation="relu", kind="transcoder",
                                 site="mlp_in", site_out="mlp_out", layer=i + 1, model=handle.spec,
                                 d_model=handle.d_model))
    return Transcoders(layers, "exact")


def save(transcoders: Transcoders, folder: Path, drop: int | None = None) -> Path:
    """The set as a folder of layer_00 … (without block ``drop``)."""
    for i, dictionary in enumerate(transcoders.layers):
        if i != drop:
            save_dictionary(dictionary, folder / f"layer_{i:02d}")
    return folder
