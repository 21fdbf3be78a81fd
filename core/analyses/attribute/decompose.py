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
from torch import nn

from core.errors import UserError
from core.models.adapters import in_features
from core.models.handle import Batch, ModelHandle


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
    x = clean_input.detach().double()
    weight = getattr(norm, "weight", None)
    gamma = weight.detach().double() if weight is not None else torch.ones_like(x)
    if type(norm).__name__.startswith("Gemma"):  # Gemma's RMSNorm multiplies by (1 + weight), as adapter.norm_weight
        gamma = 1.0 + gamma
    if isinstance(norm, nn.LayerNorm):
        centred = x - x.mean()
        scale = gamma / torch.sqrt((centred * centred).mean() + norm.eps)
        bias = norm.bias.detach().double() if norm.bias is not None else None
        return FrozenNorm(scale, True, bias)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None:
        raise UserError(f"direct logit attribution cannot freeze a {type(norm).__name__}: it knows RMSNorm and LayerNorm")
    return FrozenNorm(gamma / torch.sqrt((x * x).mean() + float(eps)), False, None)


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

    @property
    def gap(self) -> torch.Tensor:
        """``final`` minus the sum of the parts (float64): rounding only, when the adapter is right."""
        return self.final.double().cpu() - self.vectors.sum(0)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def head_outputs(proj: nn.Module, z: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Each head's share of ``proj(z)`` without its bias: Float64[Tensor, "head d_model"], summing to ``proj(z) - bias``.

    ``z`` [n_heads · head_dim] is the projection's input (the heads concatenated).
    """
    weight = getattr(proj, "weight", None)
    n_in = in_features(proj)
    if weight is not None and weight.is_floating_point() and weight.ndim == 2 and n_in in weight.shape:
        # Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
        w_in_out = weight.detach().double().T if hasattr(proj, "in_features") else weight.detach().double()
        w_in_out = w_in_out.cpu().reshape(n_heads, n_in // n_heads, -1)
        return torch.einsum("hk,hkd->hd", z.double().cpu().reshape(n_heads, -1), w_in_out)
    # Quantized or unusual projections: run the module itself once per head on the other heads zeroed.
    masks = torch.zeros(n_heads + 1, n_in, dtype=z.dtype, device=z.device)
    for h in range(n_heads):
        masks[h, h * n_in // n_heads:(h + 1) * n_in // n_heads] = 1
    with torch.inference_mode():
        out = _first(proj(masks * z)).double().cpu()
    return out[:n_heads] - out[n_heads]  # the last row is the bias alone


def _bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach().double().cpu() if isinstance(bias, torch.Tensor) else None


def decompose(handle: ModelHandle, batch: Batch, position: int) -> Decomposition:
    """Split the final residual of prompt 0 of ``batch`` at padded index ``position`` into its parts (one pass)."""
    adapter, model = handle.adapter, handle.model
    layers = adapter.layers(model)
    n = len(layers)
    seen: dict[tuple[str, int], torch.Tensor] = {}

    def at(hidden: torch.Tensor) -> torch.Tensor:
        return hidden[0, position].detach().clone()

    def keep_input(key):
        def hook(module, args, kwargs):
            seen[key] = at(_input(args, kwargs))
        return hook

    def keep_output(key):
        def hook(module, args, output):
            seen[key] = at(_first(output))
        return hook

    post_normed = [adapter.attn_branch(layer) is not adapter.attention(layer) for layer in layers]

    def register() -> list:
        hooks = [layers[0].register_forward_pre_hook(keep_input(("embed", 0)), with_kwargs=True),
                 layers[-1].register_forward_hook(keep_output(("final", 0)))]
        for i, layer in enumerate(layers):
            hooks.append(adapter.attn_out_proj(layer).register_forward_pre_hook(keep_input(("z", i)), with_kwargs=True))
            branch = adapter.attn_branch(layer)
            if post_normed[i]:
                hooks.append(branch.register_forward_pre_hook(keep_input(("post_in", i)), with_kwargs=True))
            hooks.append(branch.register_forward_hook(keep_output(("attn", i))))
            hooks.append(adapter.mlp_branch(layer).register_forward_hook(keep_output(("mlp", i))))
        return hooks

    handle.run_body_hooked(batch, register)

    labels: list[tuple[str, str, int | None, int | None]] = []  # name, kind, layer, head
    rows: list[torch.Tensor] = []

    def add(name: str, kind: str, layer: int | None, head: int | None, vector: torch.Tensor) -> None:
        labels.append((name, kind, layer, head))
        rows.append(vector)

    add("embed", "embed", None, None, seen["embed", 0].double().cpu())
    for i, layer in enumerate(layers):
        proj = adapter.attn_out_proj(layer)
        heads = head_outputs(proj, seen["z", i], handle.n_heads)
        bias = _bias(proj)
        if post_normed[i]:
            post = freeze_norm(adapter.attn_branch(layer), seen["post_in", i].cpu())
            heads = post.linear(heads)
            if bias is not None or post.bias is not None:
                bias = (post.linear(bias) if bias is not None else 0) + (post.bias if post.bias is not None else 0)
        for h in range(handle.n_heads):
            add(f"L{i}H{h}", "head", i, h, heads[h])
        if bias is not None:
            add(f"L{i} attention bias", "bias", i, None, bias)
        add(f"MLP{i}", "mlp", i, None, seen["mlp", i].double().cpu())
    names, kinds, layer_of, head_of = (list(column) for column in zip(*labels))
    return Decomposition(
        names, kinds, layer_of, head_of, torch.stack(rows), seen["final", 0],
        attn_branches=torch.stack([seen["attn", i].double().cpu() for i in range(n)]),
        mlp_branches=torch.stack([seen["mlp", i].double().cpu() for i in range(n)]),
    )
