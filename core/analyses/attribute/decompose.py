"""The final residual at one position as a sum of what each part of the model wrote, from one forward pass.

With every norm between a part and the residual frozen at its clean scale (Gemma 2/3's post-norms) the
residual stream entering the final norm is exactly

    embeddings + Σ_layers [ Σ_heads post(W_O[:, head] · z_head) + post(attention out bias) + MLP branch ]

where ``z_head`` is the head's slice of the input of the attention output projection and ``post`` is the
frozen post-norm (the identity when the block adds the attention output directly). GPT-NeoX's parallel
residual is the same sum: both branches read the block input. GPT-2's position embedding is part of
"embeddings" (the residual entering block 0). Every vector here is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.models.handle import Batch, ModelHandle
from core.models.norms import FrozenNorms
from core.models.sites import Site


@dataclass
class Decomposition:
    """What each part of the model added to the residual stream at one position.

    ``vectors``: Float64[Tensor, "component d_model"], in the order of ``names``/``kinds``/``layers``/``heads``
    (embed, then per layer its heads, its attention bias if any, its MLP); their sum is ``final`` up to
    float32 rounding. ``final``: Float[Tensor, "d_model"], the residual entering the final norm, in the
    model's dtype. ``attn_branches``/``mlp_branches``: Float64[Tensor, "layer d_model"], what each block's
    attention and MLP added, as the model computed it (for checks).
    """

    names: list[str]
    kinds: list[str]
    layers: list[int | None]
    heads: list[int | None]
    vectors: torch.Tensor
    final: torch.Tensor
    attn_branches: torch.Tensor
    mlp_branches: torch.Tensor
    norms: FrozenNorms | None = None  # every norm frozen at this position (the final norm reads ``final``)

    @property
    def gap(self) -> torch.Tensor:
        """``final`` minus the sum of the parts (float64): rounding only, when the adapter is right."""
        return self.final.double().cpu() - self.vectors.sum(0)


def head_outputs(w_o: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Each head's share of the output projection of ``z`` [n_heads, head_dim] without its bias:
    Float64[Tensor, "head d_model"], summing to ``proj(z) - bias``. ``w_o``: the heads' W_O [head, head_dim, d_model]."""
    return torch.einsum("hk,hkd->hd", z.double().cpu(), w_o.double().cpu())


def decompose(handle: ModelHandle, batch: Batch, position: int) -> Decomposition:
    """Split the final residual of prompt 0 of ``batch`` at padded index ``position`` into its parts (one pass)."""
    n = handle.n_layers
    sites = [Site("resid_pre", 0)] + [Site(kind, i) for i in range(n) for kind in ("z", "attn_out", "mlp_out")]
    index = torch.tensor([[position]] * len(batch.lengths))
    seen = handle.record(batch, sites, index=index, norms_at=(0, position))
    norms = seen.norms

    def at(site: Site) -> torch.Tensor:
        return seen[site][0, 0]

    labels: list[tuple[str, str, int | None, int | None]] = []  # name, kind, layer, head
    rows: list[torch.Tensor] = []

    def add(name: str, kind: str, layer: int | None, head: int | None, vector: torch.Tensor) -> None:
        labels.append((name, kind, layer, head))
        rows.append(vector)

    add("embed", "embed", None, None, at(Site("resid_pre", 0)).double().cpu())
    for i in range(n):
        heads = head_outputs(handle.weights.out_proj(i), at(Site("z", i)))
        bias = handle.weights.out_proj_bias(i)
        bias = bias.double().cpu() if bias is not None else None
        if handle.weights.residual_scale != 1.0:  # Granite: the block scales what attention adds
            heads = heads * handle.weights.residual_scale
            bias = None if bias is None else bias * handle.weights.residual_scale
        post = norms.attn_post[i]
        if post is not None:
            heads = post.linear(heads)
            if bias is not None or post.bias is not None:
                bias = (post.linear(bias) if bias is not None else 0) + (post.bias if post.bias is not None else 0)
        for h in range(handle.n_heads):
            add(f"L{i}H{h}", "head", i, h, heads[h])
        if bias is not None:
            add(f"L{i} attention bias", "bias", i, None, bias)
        add(f"MLP{i}", "mlp", i, None, at(Site("mlp_out", i)).double().cpu())
    names, kinds, layer_of, head_of = (list(column) for column in zip(*labels))
    return Decomposition(
        names, kinds, layer_of, head_of, torch.stack(rows), seen.final[0, position].clone(),
        attn_branches=torch.stack([at(Site("attn_out", i)).double().cpu() for i in range(n)]),
        mlp_branches=torch.stack([at(Site("mlp_out", i)).double().cpu() for i in range(n)]),
        norms=norms,
    )
