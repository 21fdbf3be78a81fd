"""Where in the model an activation is read or edited: ``Site``; what is done to it: ``Edit``.

Sites are named as the field names them (TransformerLens's hook names, in words). For a batch of
``b`` prompts of ``p`` padded positions:

=============  ===========================================================  ============================
kind           what it is                                                    shape
=============  ===========================================================  ============================
resid_pre      the residual stream entering block ``layer`` (layer 0: the   [b, p, d_model]
               embeddings as the first block sees them, scaled)
resid_mid      after the block's attention: resid_pre + attn_out             [b, p, d_model]
resid_post     the block's output (layer n_layers − 1: before the final     [b, p, d_model]
               norm)
attn_out       what the attention adds to the residual (after Gemma's       [b, p, d_model]
               post-attention norm and any residual multiplier)
z              each head's output before the output projection (the         [b, p, head, head_dim]
               projection's input split by head)
pattern        attention weights (each query row sums to 1 over keys)       [b, head, query, key]
mlp_in         the MLP's input (after its pre-norm): what transcoders read  [b, p, d_model]
mlp            the MLP module's own output (before Gemma's post-norm): what  [b, p, d_model]
               component ablation replaces
mlp_out        what the MLP adds to the residual (after any post-norm and    [b, p, d_model]
               residual multiplier): what MLP SAEs and transcoders predict
neurons        the MLP's hidden activations (input of its output            [b, p, d_mlp]
               projection), one per neuron
v              each key-value head's value vectors: the value projection's  [b, p, kv_head, head_dim]
               output (its bias included) on the attention's normalised
               input; head h reads kv head h // (n_heads / kv_heads)
=============  ===========================================================  ============================

An ``Edit`` changes one site during a pass: ``replace`` (by ``value``), ``add`` (``value``), ``scale`` (by the
number ``value``) or ``zero``, at chosen batch ``rows`` and padded ``positions`` (None: all) and, for ``z`` and
``neurons``, chosen ``units`` (heads, neurons; None: all). ``value`` broadcasts to the edited slice, whose
shape is [rows, positions, units, ...] for ``z`` (units = heads: [R, P, U, head_dim]) and ``neurons``
([R, P, U]), and [rows, positions, d_model] otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from core.errors import UserError

SITE_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "z", "pattern", "mlp_in", "mlp", "mlp_out", "neurons",
              "v")
EDITABLE = ("resid_pre", "resid_post", "attn_out", "z", "mlp_in", "mlp", "mlp_out", "neurons")
EDIT_OPS = ("replace", "add", "scale", "zero")
UNIT_KINDS = ("z", "neurons")  # sites whose last named axis is a unit (head, neuron)


@dataclass(frozen=True, order=True)
class Site:
    """One place in the model (see the module docstring): ``Site("resid_post", 9)``."""

    kind: str
    layer: int

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> "Site":
        """``"resid_post.9"`` -> ``Site("resid_post", 9)``; ``UserError`` naming the kinds otherwise."""
        kind, _, layer = text.strip().partition(".")
        if kind not in SITE_KINDS or not layer.lstrip("-").isdigit():
            raise UserError(f"'{text}' is not a site: write KIND.LAYER with KIND one of {', '.join(SITE_KINDS)}")
        return cls(kind, int(layer))


def check_sites(sites: Sequence[Site], n_layers: int) -> None:
    """``UserError`` naming the first site whose kind or layer the model does not have."""
    for site in sites:
        if site.kind not in SITE_KINDS:
            raise UserError(f"unknown site kind '{site.kind}': choose one of {', '.join(SITE_KINDS)}")
        if not 0 <= site.layer < n_layers:
            raise UserError(f"{site} does not exist: the model has layers 0..{n_layers - 1}")


@dataclass(frozen=True)
class Edit:
    """A change to one site during a pass (see the module docstring)."""

    site: Site
    op: str = "replace"
    value: Any = None  # a Tensor broadcasting to the edited slice, or a number for "scale"
    positions: tuple[int, ...] | None = None  # padded positions (None: all)
    rows: tuple[int, ...] | None = None  # batch rows (None: all)
    units: tuple[int, ...] | None = None  # heads of ``z``, neurons of ``neurons`` (None: all)
    # (rows, positions) of equal length, paired: cell i is (rows[i], positions[i]); the edited slice is then
    # [cell, ...] (``rows``/``positions`` are ignored). Many rows each edited at their own positions, in one hook.
    cells: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def check(self, n_layers: int) -> None:
        check_sites([self.site], n_layers)
        if self.site.kind not in EDITABLE:
            raise UserError(f"{self.site.kind} cannot be edited: edit one of {', '.join(EDITABLE)}")
        if self.op not in EDIT_OPS:
            raise UserError(f"unknown edit '{self.op}': choose one of {', '.join(EDIT_OPS)}")
        if self.op in ("replace", "add") and not isinstance(self.value, torch.Tensor):
            raise UserError(f"a '{self.op}' edit needs a tensor value")
        if self.op == "scale" and not isinstance(self.value, (int, float)):
            raise UserError(f"a 'scale' edit needs a number, got {self.value!r}")
        if self.units is not None and self.site.kind not in UNIT_KINDS:
            raise UserError(f"{self.site.kind} has no units: units name heads (z) or neurons (neurons)")


def apply_edit(edit: Edit, activation: torch.Tensor) -> torch.Tensor:
    """``activation`` (the site's tensor, batch-first) with ``edit`` applied, as a new tensor (the input is not changed).

    ``z`` arrives as [b, p, head, head_dim] and ``neurons`` as [b, p, neuron]: units index axis 2. The edited
    slice is [rows, positions(, units), ...], or [cell(, units), ...] with ``cells``; ``value`` broadcasts to it.
    """
    device = activation.device

    def ids(picked, axis):
        if picked is None:
            return torch.arange(activation.shape[axis], device=device)
        return torch.as_tensor(picked, dtype=torch.long, device=device)

    if edit.cells is not None:
        index = [ids(edit.cells[0], 0), ids(edit.cells[1], 1)]
        if edit.units is not None:
            index = [index[0][:, None], index[1][:, None], ids(edit.units, 2)[None, :]]
    else:
        chosen = [edit.rows, edit.positions] + ([edit.units] if edit.units is not None else [])
        index = []
        for axis, picked in enumerate(chosen):
            view = [1] * len(chosen)
            view[axis] = -1
            index.append(ids(picked, axis).view(view))
    key = tuple(index)
    new = activation.clone()
    old = new[key]
    if edit.op == "zero":
        value = torch.zeros_like(old)
    elif edit.op == "scale":
        value = old * float(edit.value)
    else:
        value = edit.value.to(device=device, dtype=activation.dtype)
        value = old + value if edit.op == "add" else value.expand_as(old)
    new[key] = value
    return new


class Recording(dict):
    """What a pass recorded: ``Site`` -> tensor (shapes in the module docstring), plus ``final``: the last block's
    output [b, p, d_model] (before the final norm) when the pass ran to the end."""


    final: torch.Tensor | None = None
    norms: Any = None  # FrozenNorms, when the norms were frozen during the pass (``norms_at``)
