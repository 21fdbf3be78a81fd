"""A norm frozen at the scale it had on a clean input: linear in its input, which is what direct logit attribution,
attribution graphs and the replacement model need. How each family stores its norms (Gemma's 1 + γ, centring,
eps) is the adapter's to know (``Adapter.norm_spec``, ``Adapter.norm_gamma``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from core.models.adapters import Adapter


@dataclass(frozen=True)
class FrozenNorm:
    """A norm with its scale frozen at its value on the clean input: ``x ↦ centre?(x) · scale + bias``.

    ``scale``: Float64[Tensor, "d_model"], γ / rms (RMSNorm) or γ / std (LayerNorm) of the clean input (frozen at
    every position: Float64[Tensor, "pos d_model"], one row per position, which ``linear`` broadcasts over);
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
        return r - r.mean(-1, keepdim=True) if self.centred else r


def freeze_norm(adapter: Adapter, norm: nn.Module, clean_input: torch.Tensor) -> FrozenNorm:
    """``norm`` (any family's RMSNorm or LayerNorm, as ``adapter.norm_spec`` reads it) frozen at its scale on
    ``clean_input`` [d_model] (or [pos, d_model]: one scale per position); float64."""
    x = clean_input.detach().double().cpu()
    spec = adapter.norm_spec(norm)
    gamma = adapter.norm_gamma(norm, torch.float64).cpu()
    if spec.centres:
        centred = x - x.mean(-1, keepdim=True)
        scale = gamma / torch.sqrt((centred * centred).mean(-1, keepdim=True) + spec.eps)
        return FrozenNorm(scale, True, spec.bias.double().cpu() if spec.bias is not None else None)
    return FrozenNorm(gamma / torch.sqrt((x * x).mean(-1, keepdim=True) + spec.eps), False, None)


@dataclass
class FrozenNorms:
    """The norms between what a component writes and the logits, frozen at one clean position (or at every position
    of one prompt: ``record(norms_at=(row, None))``).

    ``final``: the final norm; ``attn_post[l]`` / ``mlp_post[l]``: the norm a block applies to what its attention /
    MLP writes before adding it (Gemma 2/3's post-norms), None where the block adds it directly; ``attn_pre[l]`` /
    ``mlp_pre[l]``: the norm in front of its attention / MLP (what q, k, v and transcoders read through), None where
    the block has none (``weights.attn_pre_norm``).
    """

    final: FrozenNorm
    attn_post: list[FrozenNorm | None]
    mlp_post: list[FrozenNorm | None]
    attn_pre: list[FrozenNorm | None] = field(default_factory=list)
    mlp_pre: list[FrozenNorm | None] = field(default_factory=list)
