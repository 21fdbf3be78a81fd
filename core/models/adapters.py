"""One small adapter per architecture family: where the layers, final norm and unembedding are.

Analysis code is written once against these names (as nnterp does) and never reaches into
model internals itself. Adapters wrap the original Hugging Face modules; nothing is
reimplemented, so the lens reproduces the model's own logits exactly.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from core.errors import UserError


@dataclass(frozen=True)
class Adapter:
    """Names of the parts of one architecture family.

    Each accessor takes the loaded model (or one decoder layer) and returns a module.
    """

    family: str
    model_types: tuple[str, ...]
    base: Callable[[nn.Module], nn.Module]  # decoder stack without unembedding
    layers: Callable[[nn.Module], nn.ModuleList]  # decoder blocks, in order
    final_norm: Callable[[nn.Module], nn.Module]  # applied to the last residual
    unembed: Callable[[nn.Module], nn.Module]  # d_model -> vocab
    embed: Callable[[nn.Module], nn.Module]  # token embedding table
    attention: Callable[[nn.Module], nn.Module]  # attention module of one layer
    attn_out_proj: Callable[[nn.Module], nn.Module]  # its output projection; input = concat of heads
    mlp: Callable[[nn.Module], nn.Module]  # MLP of one layer
    embedding_scale: Callable[[nn.Module], float] = lambda model: 1.0  # factor the forward applies after `embed`
    # The modules whose outputs the block adds to the residual (default: the attention and the MLP);
    # Gemma 2/3 add them through post-norms. Output tuples count by their first element.
    attn_branch_of: Callable[[nn.Module], nn.Module] | None = None
    mlp_branch_of: Callable[[nn.Module], nn.Module] | None = None

    def attn_branch(self, layer: nn.Module) -> nn.Module:
        """The module whose output is what the attention adds to the residual stream in ``layer``."""
        return (self.attn_branch_of or self.attention)(layer)

    def mlp_branch(self, layer: nn.Module) -> nn.Module:
        """The module whose output is what the MLP adds to the residual stream in ``layer``."""
        return (self.mlp_branch_of or self.mlp)(layer)

    def run_body(self, model: nn.Module, **inputs):
        """The decoder stack without the unembedding (inputs: input_ids, attention_mask, position_ids)."""
        if self.family == "tinylm":
            return model(**inputs)  # tiny: computing its logits too costs nothing
        return self.base(model)(**inputs, use_cache=False)

    def run_logits(self, model: nn.Module, **inputs) -> torch.Tensor:
        """The model's own forward pass -> logits [batch, pos, vocab]."""
        if self.family == "tinylm":
            return model(**inputs)
        return model(**inputs, use_cache=False).logits

    def softcap(self, model: nn.Module) -> float | None:
        """Final-logit soft cap (Gemma 2/3 configs may set one): logits = cap * tanh(logits / cap)."""
        return getattr(model.config, "final_logit_softcapping", None) or None

    def norm_weight(self, model: nn.Module) -> torch.Tensor:
        """The effective elementwise scale γ of the final norm (Gemma stores γ - 1)."""
        norm = self.final_norm(model)
        weight = norm.weight.detach().float()
        if type(norm).__name__.startswith("Gemma"):  # Gemma RMSNorm multiplies by (1 + weight)
            weight = 1.0 + weight
        return weight


def _llama_like(family: str, *model_types: str, **overrides) -> Adapter:
    parts = dict(
        family=family,
        model_types=model_types,
        base=lambda m: m.model,
        layers=lambda m: m.model.layers,
        final_norm=lambda m: m.model.norm,
        unembed=lambda m: m.get_output_embeddings(),
        embed=lambda m: m.get_input_embeddings(),
        attention=lambda layer: layer.self_attn,
        attn_out_proj=lambda layer: layer.self_attn.o_proj,
        mlp=lambda layer: layer.mlp,
    )
    parts.update(overrides)
    return Adapter(**parts)


def _path(path: str) -> Callable[[nn.Module], nn.Module]:
    """A module by its dotted attribute path ("" is the module itself)."""
    return (lambda module: module) if not path else operator.attrgetter(path)


def _by_path(family: str, *, base: str, layers: str, final_norm: str, attention: str, attn_out_proj: str,
             unembed: str | None = None, embed: str | None = None) -> Adapter:
    """An adapter whose parts are attribute paths (the embeddings default to the model's own accessors)."""
    return Adapter(
        family=family, model_types=(family,), base=_path(base), layers=_path(layers), final_norm=_path(final_norm),
        unembed=_path(unembed) if unembed else (lambda m: m.get_output_embeddings()),
        embed=_path(embed) if embed else (lambda m: m.get_input_embeddings()),
        attention=_path(attention), attn_out_proj=_path(attn_out_proj), mlp=_path("mlp"),
    )


ADAPTERS: tuple[Adapter, ...] = (
    _llama_like("llama", "llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2"),
    _llama_like(
        "gemma",
        "gemma",
        "gemma2",
        "gemma3_text",
        # Gemma 3's embedding module scales by sqrt(d) itself; Gemma 1/2 scale in the model's forward.
        embedding_scale=lambda m: 1.0
        if hasattr(m.model.embed_tokens, "embed_scale")
        else float(m.config.hidden_size) ** 0.5,
        # Gemma 2/3: residual + post_attention_layernorm(attn), then + post_feedforward_layernorm(mlp);
        # Gemma 1's post_attention_layernorm is the MLP's pre-norm, as in Llama.
        attn_branch_of=lambda layer: layer.post_attention_layernorm
        if hasattr(layer, "pre_feedforward_layernorm") else layer.self_attn,
        mlp_branch_of=lambda layer: layer.post_feedforward_layernorm
        if hasattr(layer, "post_feedforward_layernorm") else layer.mlp,
    ),
    _by_path("gpt2", base="transformer", layers="transformer.h", final_norm="transformer.ln_f",
             attention="attn", attn_out_proj="attn.c_proj"),
    _by_path("gpt_neox", base="gpt_neox", layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
             attention="attention", attn_out_proj="attention.dense"),
    _by_path("tinylm", base="", layers="blocks", final_norm="ln_f", attention="attn", attn_out_proj="attn.out_proj",
             unembed="lm_head", embed="tok_emb"),
)

def in_features(module: nn.Module) -> int:
    """Input width of a Linear or of GPT-2's transposed Conv1D."""
    if hasattr(module, "in_features"):
        return int(module.in_features)
    return int(module.weight.shape[0])  # transformers.pytorch_utils.Conv1D stores [in, out]


SUPPORTED_MODEL_TYPES = tuple(t for a in ADAPTERS for t in a.model_types)


def model_type_of(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__.lower()


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of this model's family, or a UserError naming what is missing."""
    model_type = model_type_of(model)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise UserError(
        f"architecture '{model_type}' ({type(model).__name__}) is not supported: layerscope needs an "
        f"adapter naming its decoder layers, final norm, unembedding and attention output projection "
        f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)}; add one in core/models/adapters.py)"
    )
