"""Dictionaries for tiny random models and the default model, saved in the layouts people publish them in."""

import pytest
import torch

from core.features import Dictionary, save_dictionary
from tests import tiny


def random_dictionary(d_in: int, width: int = 48, k: int = 4, site: str = "resid", layer: int = 2, model: str | None = None,
                      activation: str = "topk", seed: int = 0, scale: float = 1.0) -> Dictionary:
    """Unit decoder rows, an encoder aligned with them (so features fire), TopK unless told."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(width, d_in, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    fields = dict(W_enc=(W_dec.T / scale).contiguous(), b_enc=torch.zeros(width), W_dec=W_dec, b_dec=torch.zeros(d_in),
                  activation=activation, k=k if activation in ("topk", "batchtopk") else None, site=site, layer=layer,
                  model=model, d_model=d_in)
    if activation in ("jumprelu", "batchtopk"):
        fields["threshold"] = torch.full((width,), 0.01)
    return Dictionary(**fields)


@pytest.fixture(scope="module")
def llama():
    return tiny.handle("llama")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh $LAYERSCOPE_HOME: feature cards and trained dictionaries go there."""
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def saved(tmp_path, llama, home):
    """A TopK SAE on the residual after block 2 of the tiny Llama, in Gemma Scope 2's layout."""
    return save_dictionary(random_dictionary(llama.d_model, model="tiny-llama"), tmp_path / "resid2")
