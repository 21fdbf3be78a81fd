"""Norms as numbers: the effective scale of any norm module, and a norm frozen at its clean scale.

Gemma's RMSNorm multiplies by (1 + weight); every other family's by weight. ``norm_gamma`` is the one place
that knows. A norm *frozen* at the scale it had on a clean input is linear in its input, which is what direct
logit attribution, attribution graphs and the replacement model need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.errors import UserError


def is_centring(norm: nn.Module) -> bool:
    """LayerNorm (torch's, or a family's own such as Cohere's, which has no bias) centres its input; RMSNorm does not."""
    name = type(norm).__name__
    return isinstance(norm, nn.LayerNorm) or ("LayerNorm" in name and "rms" not in name.lower())


def norm_gamma(norm: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The effective elementwise scale γ of a norm module, in ``dtype`` (Gemma's RMSNorm stores γ − 1)."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        raise UserError(f"{type(norm).__name__} has no scale to read")
    gamma = weight.detach().to(dtype)
    if type(norm).__name__.startswith("Gemma"):
        gamma = 1.0 + gamma
    return gamma


def norm_eps(norm: nn.Module) -> float:
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm, "eps", None)
    if eps is None:
        raise UserError(f"cannot freeze a {type(norm).__name__}: layerscope knows RMSNorm and LayerNorm")
    return float(eps)


@dataclass(frozen=True)
class FrozenNorm:
    """A norm with its scale frozen at its value on the clean input: ``x ↦ centre?(x) · scale + bias``.

    ``scale``: Float64[Tensor, "d_model"], γ / rms (RMSNorm) or γ / std (LayerNorm) of the clean input;
    ``centred``: LayerNorm subtracts the mean first; ``bias``: LayerNorm's β (None for RMSNorm).
    """

    scale: torch.Tensor
    centred: bool
    bias: torch.Tensor | None

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """The norm without its bias, linear in ``x`` [..., d_model] (float64)."""
        x = x.double()
        if self.centred:
            x = x - x.mean(-1, keepdim=True)
        return x * self.scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out + self.bias if self.bias is not None else out

    def reader(self, direction: torch.Tensor) -> torch.Tensor:
        """``r`` with ``linear(x) · direction == x · r`` for every x: the direction read back through the norm."""
        r = self.scale * direction.double()
        return r - r.mean() if self.centred else r


def freeze_norm(norm: nn.Module, clean_input: torch.Tensor) -> FrozenNorm:
    """``norm`` (RMSNorm of any family, or LayerNorm) frozen at its scale on ``clean_input`` [d_model]."""
    x = clean_input.detach().double().cpu()
    weight = getattr(norm, "weight", None)
    gamma = norm_gamma(norm, torch.float64).cpu() if weight is not None else torch.ones_like(x)
    eps = norm_eps(norm)
    if is_centring(norm):
        centred = x - x.mean()
        scale = gamma / torch.sqrt((centred * centred).mean() + eps)
        bias = getattr(norm, "bias", None)
        return FrozenNorm(scale, True, bias.detach().double().cpu() if isinstance(bias, torch.Tensor) else None)
    return FrozenNorm(gamma / torch.sqrt((x * x).mean() + eps), False, None)


@dataclass
class FrozenNorms:
    """The norms between what a component writes and the logits, frozen at one clean position.

    ``final``: the final norm; ``attn_post[l]`` / ``mlp_post[l]``: the norm a block applies to what its attention /
    MLP writes before adding it (Gemma 2/3's post-norms), None where the block adds it directly.
    """

    final: FrozenNorm
    attn_post: list[FrozenNorm | None]
    mlp_post: list[FrozenNorm | None]
