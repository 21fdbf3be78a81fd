"""Read-only views of a model's weights, in the field's words: ``handle.weights``.

Every view is detached (no gradient reaches the model) and is a tensor the caller must not write to. Views of
quantized matrices are read back through the module itself (``probe``: W = module(I) − module(0)), so they hold
what the model computes with; where a matrix cannot be read that way the view raises one ``UserError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.errors import UserError
from core.models.adapters import in_features

if TYPE_CHECKING:
    from core.models.handle import ModelHandle

IN_PROJECTIONS = ("up_proj", "c_fc", "dense_h_to_4h", "fc1", "fc_in", "w1", "w3", "in_proj")


def is_quantized(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return weight is None or not weight.is_floating_point() or type(weight).__name__ not in ("Parameter", "Tensor")


def linear_matrix(module: nn.Module) -> torch.Tensor:
    """The matrix of a linear module as [out, in] float32 (Linear's layout), whatever stores it.

    Linear stores [out, in], GPT-2's Conv1D [in, out]; a quantized module is probed: module(I) − module(0)."""
    weight = getattr(module, "weight", None)
    if weight is not None and weight.is_floating_point() and weight.ndim == 2 and type(weight).__name__ == "Parameter":
        return (weight.detach() if hasattr(module, "in_features") else weight.detach().T).float()
    n_in = in_features(module)
    device = next(module.parameters()).device
    dtype = getattr(module, "compute_dtype", None) or torch.float32
    with torch.inference_mode():
        eye = torch.eye(n_in, device=device, dtype=dtype)
        out = module(torch.cat([eye, torch.zeros(1, n_in, device=device, dtype=dtype)])).float()
    return (out[:-1] - out[-1]).T.contiguous()


def find_child(parent: nn.Module, names: tuple[str, ...], what: str) -> nn.Module:
    for name in names:
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "weight"):
            return module
    raise UserError(f"cannot find the {what} of {type(parent).__name__} (looked for {', '.join(names)})")


PARTS = ("all", "attention", "mlp")
# Where blocks keep the norms in front of their attention and MLP, by family (first found wins).
ATTN_PRE_NORMS = ("input_layernorm", "ln_1", "attention_norm", "ln1", "attention_layernorm", "ln_attn")
MLP_PRE_NORMS = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "ffn_norm", "ln2", "feedforward_layernorm",
                 "ln_mlp")


@dataclass(frozen=True)
class LinearLayer:
    """One linear layer of a block (attention or MLP), by name ("layers.3.mlp.down_proj") and size."""

    name: str
    in_features: int
    out_features: int
    has_bias: bool


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


class WeightViews:
    """``handle.weights``: the unembedding, embeddings, norms' scales, each head's W_O and OV, each neuron's vectors."""

    def __init__(self, handle: "ModelHandle"):
        self._handle = handle

    @property
    def _model(self) -> nn.Module:
        return self._handle.model

    @property
    def _adapter(self):
        return self._handle.adapter

    def _layer(self, layer: int) -> nn.Module:
        layers = self._adapter.layers(self._model)
        if not 0 <= layer < len(layers):
            raise UserError(f"layer {layer} does not exist: choose 0..{len(layers) - 1}")
        return layers[layer]

    # -- the output side ------------------------------------------------------------------------------------

    def unembedding(self, packed_ok: bool = False) -> torch.Tensor:
        """W_U as stored: Float[Tensor, "vocab d_model"] in the model's dtype (a view; do not write to it).
        ``packed_ok``: return a quantized (packed, not floating-point) matrix as stored instead of refusing it."""
        weight = getattr(self._adapter.unembed(self._model), "weight", None)
        if packed_ok and weight is not None:
            return weight.detach()
        if weight is None or not weight.is_floating_point():
            raise UserError("the unembedding is quantized: its rows cannot be read (load the model without quantization)")
        return weight.detach()

    def unembedding_module(self) -> nn.Module:
        """The unembedding module itself, to call on normalised residuals ([..., d_model] -> [..., vocab])."""
        return self._adapter.unembed(self._model)

    def unembedding_bias(self) -> torch.Tensor | None:
        """b_U [vocab] (None for most models)."""
        bias = getattr(self._adapter.unembed(self._model), "bias", None)
        return bias.detach() if isinstance(bias, torch.Tensor) else None

    def final_norm(self) -> nn.Module:
        """The final norm module (call it on residuals; its parameters get no gradient through ``decode``)."""
        return self._adapter.final_norm(self._model)

    def final_norm_gamma(self) -> torch.Tensor:
        """The final norm's effective scale γ [d_model], float32."""
        return self._adapter.norm_gamma(self._adapter.final_norm(self._model))

    @property
    def softcap(self) -> float | None:
        """The final-logit soft cap (logits = cap · tanh(logits / cap)), None without one."""
        return self._adapter.softcap(self._model)

    @property
    def logit_scale(self) -> float:
        """What the model multiplies the unembedding's output by before any soft cap (Granite, Cohere; else 1)."""
        scale = getattr(self._adapter, "logit_scale", None)
        return float(scale(self._model)) if callable(scale) else 1.0

    @property
    def residual_scale(self) -> float:
        """What each block multiplies its attention and MLP outputs by before adding them (Granite; else 1)."""
        scale = getattr(self._adapter, "residual_scale", None)
        return float(scale(self._model)) if callable(scale) else 1.0

    @property
    def tied(self) -> bool:
        """Whether the embedding and the unembedding are one matrix."""
        embed = getattr(self._adapter.embed(self._model), "weight", None)
        unembed = getattr(self._adapter.unembed(self._model), "weight", None)
        return embed is not None and unembed is not None and embed.data_ptr() == unembed.data_ptr()

    # -- the input side -------------------------------------------------------------------------------------

    def embedding(self) -> torch.Tensor:
        """W_E as stored: Float[Tensor, "vocab d_model"] (before any embedding scale)."""
        return self._adapter.embed(self._model).weight.detach()

    def embedding_scale(self) -> float:
        """What the model multiplies the looked-up embedding rows by before the first block (Gemma: √d)."""
        embed = self._adapter.embed(self._model)
        return float(getattr(embed, "embed_scale", 1.0)) * float(self._adapter.embedding_scale(self._model))

    # -- attention ------------------------------------------------------------------------------------------

    def out_proj(self, layer: int) -> torch.Tensor:
        """W_O of every head: Float[Tensor, "head head_dim d_model"] (float32), before any post-norm."""
        proj = self._adapter.attn_out_proj(self._layer(layer))
        matrix = linear_matrix(proj)  # [d_model, n_heads * head_dim]
        h = self._handle.n_heads
        return matrix.T.reshape(h, matrix.shape[1] // h, matrix.shape[0])

    def value_proj(self, layer: int) -> torch.Tensor:
        """W_V of every key-value head: Float[Tensor, "kv_head d_model head_dim"] (float32), reading the attention's
        normalised input; ``UserError`` where the value projection is fused with the queries and keys."""
        attention = self._adapter.attention(self._layer(layer))
        proj = getattr(attention, "v_proj", None)
        if not isinstance(proj, nn.Module):
            raise UserError(f"{type(attention).__name__} fuses its value projection with the queries and keys: "
                            "its OV circuits cannot be read as weights here")
        matrix = linear_matrix(proj)  # [kv_heads * head_dim, d_model]
        head_dim = self._handle.head_dim
        return matrix.reshape(-1, head_dim, matrix.shape[1]).transpose(1, 2)

    def ov(self, layer: int, head: int) -> torch.Tensor:
        """A head's OV circuit W_V W_O: Float[Tensor, "d_model d_model"] (float32; rows read the normalised input,
        columns are what the head writes, before any post-norm). Grouped-query heads share their kv head's W_V."""
        if not 0 <= head < self._handle.n_heads:
            raise UserError(f"head {head} does not exist: choose 0..{self._handle.n_heads - 1}")
        w_v = self.value_proj(layer)
        kv = head // (self._handle.n_heads // w_v.shape[0])
        return w_v[kv] @ self.out_proj(layer)[head]

    def out_proj_module(self, layer: int) -> nn.Module:
        """The attention's output projection (its input is every head's ``z``, concatenated)."""
        return self._adapter.attn_out_proj(self._layer(layer))

    def out_proj_bias(self, layer: int) -> torch.Tensor | None:
        bias = getattr(self._adapter.attn_out_proj(self._layer(layer)), "bias", None)
        return bias.detach() if isinstance(bias, torch.Tensor) else None

    def attn_post_norm(self, layer: int) -> nn.Module | None:
        """The norm applied to the attention's output before it is added (Gemma 2/3), or None."""
        block = self._layer(layer)
        branch = self._adapter.attn_branch(block)
        return None if branch is self._adapter.attention(block) else branch

    def mlp_post_norm(self, layer: int) -> nn.Module | None:
        """The norm applied to the MLP's output before it is added (Gemma 2/3), or None."""
        block = self._layer(layer)
        branch = self._adapter.mlp_branch(block)
        return None if branch is self._adapter.mlp(block) else branch

    def attn_pre_norm(self, layer: int) -> nn.Module | None:
        """The norm in front of the attention (what its queries, keys and values read through), or None."""
        return self._pre_norm(layer, ATTN_PRE_NORMS)

    def mlp_pre_norm(self, layer: int) -> nn.Module | None:
        """The norm in front of the MLP (its ``mlp_in``: what transcoders read), or None (OLMo 2 has post-norms only;
        Gemma 2/3's ``post_attention_layernorm`` is the attention's post-norm, Llama's the MLP's pre-norm)."""
        own = self._pre_norm(layer, MLP_PRE_NORMS)
        if own is None and self._adapter.parallel(self._layer(layer)):  # Cohere, Phi, Falcon: one norm feeds both
            return self.attn_pre_norm(layer)
        return own

    def _pre_norm(self, layer: int, names: tuple[str, ...]) -> nn.Module | None:
        block = self._layer(layer)
        posts = {id(self.attn_post_norm(layer)), id(self.mlp_post_norm(layer))}
        for name in names:
            module = getattr(block, name, None)
            if isinstance(module, nn.Module) and _is_norm(module) and id(module) not in posts:
                return module
        return None

    def mlp_post_gamma(self, layer: int) -> torch.Tensor | None:
        """The effective scale γ [d_model] of the MLP's post-norm (Gemma 2/3, OLMo 2), None without one."""
        norm = self.mlp_post_norm(layer)
        return None if norm is None else self._adapter.norm_gamma(norm)

    # -- MLP neurons ----------------------------------------------------------------------------------------

    def mlp_out_proj(self, layer: int) -> nn.Module:
        """The MLP's output projection (its input is the neurons)."""
        block = self._layer(layer)
        proj = self._adapter.mlp_out_proj(block)
        if proj is None:
            raise UserError(f"layer {layer}'s MLP is a mixture of experts: it has no single output projection whose "
                            "neurons could be read")
        return proj

    def neuron_out(self, layer: int) -> torch.Tensor:
        """Each neuron's output ("value") vector: Float[Tensor, "neuron d_model"], float32, before any post-norm."""
        return linear_matrix(self.mlp_out_proj(layer)).T

    def neuron_in(self, layer: int) -> torch.Tensor:
        """Each neuron's input ("key") vector of its up-projection: Float[Tensor, "neuron d_model"], float32."""
        mlp = self._adapter.mlp(self._layer(layer))
        fused = getattr(mlp, "gate_up_proj", None)
        if isinstance(fused, nn.Module) and hasattr(fused, "weight"):  # Phi-3, GLM: [gate; up] in one matrix
            matrix = linear_matrix(fused)
            return matrix[matrix.shape[0] // 2:]  # the up half (the forward splits it with chunk(2) as gate, up)
        return linear_matrix(find_child(mlp, IN_PROJECTIONS, "input projection"))

    def d_mlp(self, layer: int = 0) -> int:
        """Neurons in the MLP of ``layer``."""
        return in_features(self.mlp_out_proj(layer))

    # -- every linear layer (per-token gradients) -------------------------------------------------------------

    def linear_modules(self, part: str = "all") -> dict[str, nn.Module]:
        """Every linear layer of every block's attention and/or MLP (``part``), by name, in order; ``UserError``
        when ``part`` holds a parameter that is neither a linear layer's nor a norm's."""
        if part not in PARTS:
            raise UserError(f"unknown parameter subset '{part}': choose one of {', '.join(PARTS)}")
        out: dict[str, nn.Module] = {}
        for number, block in enumerate(self._adapter.layers(self._model)):
            for name in ("attention", "mlp"):
                if part not in ("all", name):
                    continue
                prefix = f"layers.{number}.{name}"
                module = getattr(self._adapter, name)(block)
                covered: set[int] = set()
                for child_name, child in module.named_modules():
                    if _is_norm(child):
                        covered.update(id(p) for p in child.parameters())
                    elif _is_linear(child):
                        covered.update(id(p) for p in child.parameters(recurse=False))
                        out[f"{prefix}.{child_name}" if child_name else prefix] = child
                for param_name, param in module.named_parameters():
                    if id(param) not in covered:
                        raise UserError(f"per-token gradients support linear layers only, but {prefix}.{param_name} is "
                                        "another kind of parameter: choose another parameter subset")
        return out

    def linear_layers(self, part: str = "all") -> list[LinearLayer]:
        """``linear_modules`` as sizes: [LinearLayer(name, in_features, out_features, has_bias)]."""
        return [LinearLayer(name, in_features(m), int(getattr(m, "out_features", None) or m.weight.shape[1]),
                            getattr(m, "bias", None) is not None)
                for name, m in self.linear_modules(part).items()]
