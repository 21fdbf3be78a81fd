"""What an intervention acts on: heads and MLPs (``Component``), their activations, and the values they take."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import UserError
from core.models.handle import ModelHandle

ABLATIONS = ("mean", "zero", "resample")


@dataclass(frozen=True, order=True)
class Component:
    """One attention head (``head >= 0``) or one layer's MLP (``head == -1``)."""

    layer: int
    head: int = -1

    @property
    def is_mlp(self) -> bool:
        return self.head < 0

    @property
    def label(self) -> str:
        """``L3H1`` for a head, ``MLP3`` for an MLP."""
        return f"MLP{self.layer}" if self.is_mlp else f"L{self.layer}H{self.head}"


def heads(handle: ModelHandle) -> list[Component]:
    """Every attention head, layer-major: L0H0, L0H1, …"""
    return [Component(layer, head) for layer in range(handle.n_layers) for head in range(handle.n_heads)]


def mlps(handle: ModelHandle) -> list[Component]:
    """Every layer's MLP: MLP0, MLP1, …"""
    return [Component(layer) for layer in range(handle.n_layers)]


@dataclass
class Activations:
    """What every component writes, for one batch of equally long prompts.

    ``heads``: Float[Tensor, "layer batch pos head head_dim"], the input of the attention output
    projection split by head; ``mlps``: Float[Tensor, "layer batch pos d_model"], the MLP outputs.
    A batch axis of size 1 broadcasts over prompts (a mean, or zeros).
    """

    heads: torch.Tensor
    mlps: torch.Tensor

    @property
    def n_prompts(self) -> int:
        return self.heads.shape[1]

    @property
    def n_positions(self) -> int:
        return self.heads.shape[2]

    def mean(self) -> "Activations":
        """The mean over prompts, per position (batch axis 1)."""
        return Activations(self.heads.mean(1, keepdim=True), self.mlps.mean(1, keepdim=True))

    def zeros(self) -> "Activations":
        """Zeros of the same shapes, batch axis 1."""
        return Activations(torch.zeros_like(self.heads[:, :1]), torch.zeros_like(self.mlps[:, :1]))

    def rows(self, index: torch.Tensor) -> "Activations":
        """These prompts, in this order (``index``: Long[Tensor, "batch"])."""
        index = index.to(self.heads.device)
        return Activations(self.heads.index_select(1, index), self.mlps.index_select(1, index))

    def of(self, component: Component) -> torch.Tensor:
        """Float[Tensor, "batch pos head_dim"] for a head, Float[Tensor, "batch pos d_model"] for an MLP."""
        if component.is_mlp:
            return self.mlps[component.layer]
        return self.heads[component.layer, :, :, component.head]


def zero_activations(handle: ModelHandle) -> Activations:
    """Zeros for every component at one position of one prompt (they broadcast over any batch)."""
    return Activations(torch.zeros(handle.n_layers, 1, 1, handle.n_heads, handle.head_dim),
                       torch.zeros(handle.n_layers, 1, 1, handle.d_model))


def replacement(kind: str, corrupt: Activations, n_prompts: int, seed: int = 0) -> Activations:
    """The values ablated components take, from the activations of the corrupted prompts.

    ``mean`` over the corrupted prompts (per position; batch axis 1), ``zero`` (batch axis 1), or
    ``resample``: each of the ``n_prompts`` clean prompts gets the activations of one corrupted prompt
    drawn at random with ``seed`` (batch axis ``n_prompts``).
    """
    check_ablation(kind)
    if kind == "mean":
        return corrupt.mean()
    if kind == "zero":
        return corrupt.zeros()
    generator = torch.Generator().manual_seed(seed)
    return corrupt.rows(torch.randint(corrupt.n_prompts, (n_prompts,), generator=generator))


def check_ablation(kind: str) -> None:
    """``UserError`` unless ``kind`` is one of ``ABLATIONS`` (for settings that name one)."""
    if kind not in ABLATIONS:
        raise UserError(f"unknown ablation '{kind}': choose one of {', '.join(ABLATIONS)}")


def check_components(handle: ModelHandle, variants) -> None:
    """``UserError`` naming the first component (in any variant) the model does not have."""
    for components in variants:
        for c in components:
            if not 0 <= c.layer < handle.n_layers or c.head >= handle.n_heads:
                raise UserError(f"{c.label} does not exist: the model has {handle.n_layers} layers x {handle.n_heads} heads")
