"""Architectures as data: one declarative entry per family says where the parts of the residual stream are.

An entry names, by dotted attribute paths, the decoder layers, final norm, unembedding, embedding, attention,
its output projection and the MLP (as nnterp does), and states each family quirk as a field: post-norms on
the branches, parallel attention + MLP, norms that store γ − 1, multipliers on the embeddings, the branches
and the logits, a final soft cap. Adapters wrap the original Hugging Face modules; nothing is reimplemented,
so the lens reproduces the model's own logits exactly. ``ARCHITECTURES`` maps each supported model_type to
its entry; tests/models/test_architectures.py checks every one on a tiny random model.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import torch
from torch import nn

from core.errors import UserError


@dataclass(frozen=True)
class Factor:
    """A number the forward pass reads from the (text) config: ``config.<name> ** power``, 1.0 when unset."""

    name: str
    power: float = 1.0

    def of(self, config) -> float:
        value = getattr(config, self.name, None)
        return 1.0 if value is None else float(value) ** self.power

    def __str__(self) -> str:
        return f"config.{self.name}" if self.power == 1 else f"config.{self.name}^{self.power:g}"


@dataclass(frozen=True)
class NormSpec:
    """What one norm module computes on the last axis: γ ⊙ (x − mean x if ``centres``) / √(mean(·²) + eps) + bias."""

    centres: bool  # LayerNorm subtracts the mean; RMSNorm does not
    gamma: torch.Tensor  # effective elementwise scale [d], float32 (already 1 + w for norms that store γ − 1)
    bias: torch.Tensor | None  # [d] float32; None for RMSNorm and bias-free LayerNorms (Cohere, OLMo)
    eps: float

    @property
    def kind(self) -> str:
        return "layernorm" if self.centres else "rmsnorm"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The norm of ``x`` [..., d] in float32, from this description alone (frozen scales, folding, checks)."""
        x = x.float()
        if self.centres:
            x = x - x.mean(-1, keepdim=True)
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gamma.to(x.device)
        return y if self.bias is None else y + self.bias.to(x.device)


def _path(module: nn.Module, path: str):
    """The attribute at a dotted path ("" is the module itself)."""
    return operator.attrgetter(path)(module) if path else module


def _resolves(module: nn.Module, path: str, part: str = "") -> bool:
    """Whether ``path`` finds a module; an empty unembed / embed path asks the model's own accessor."""
    try:
        if not path and part in ("unembed", "embed"):
            accessor = "get_output_embeddings" if part == "unembed" else "get_input_embeddings"
            return getattr(module, accessor)() is not None
        return _path(module, path) is not None
    except (AttributeError, NotImplementedError):
        return False


def text_config(model: nn.Module):
    """The config that describes the decoder (a multimodal checkpoint keeps it in config.text_config)."""
    config = model.config
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


@dataclass(frozen=True)
class Adapter:
    """Where one architecture family keeps the parts of its residual stream, and how it forms it.

    Paths are dotted attribute paths: ``*_path`` fields on the model start at the loaded model, the others at
    one decoder layer. An empty ``unembed_path`` / ``embed_path`` means the model's own accessor
    (``get_output_embeddings`` / ``get_input_embeddings``), which survives tied or offloaded weights.
    """

    family: str
    model_types: tuple[str, ...]
    body_path: str = "model"  # decoder stack without the unembedding ("" = the model itself)
    layers_path: str = "model.layers"
    final_norm_path: str = "model.norm"
    unembed_path: str = ""
    embed_path: str = ""
    attention_path: str = "self_attn"  # per layer, from here on
    attn_out_proj_path: str = "self_attn.o_proj"  # input = concatenated heads
    mlp_path: str = "mlp"  # the MLP, or the whole mixture-of-experts block (shared experts included)
    mlp_out_proj_path: str | None = "mlp.down_proj"  # used only when the layer's MLP is dense
    # Post-norms: the module whose output the block adds to the residual, when it is not the attention / MLP.
    attn_branch_path: str | None = None
    mlp_branch_path: str | None = None
    moe_marker: str | None = None  # attribute only a mixture-of-experts block has ("experts")
    parallel_always: bool = False  # attention and MLP both read the block input
    parallel_flags: tuple[str, ...] = ()  # ... or when any of these layer / config flags is true
    norm_centres: bool = False  # the family's own norm classes are LayerNorms (torch's are recognised anyway)
    gamma_offset: float = 0.0  # the family's norms multiply by (offset + weight): Gemma / Nemotron store γ − 1
    embedding_factor: Factor | None = None  # the model's forward multiplies the embedding output by it
    residual_factor: Factor | None = None  # the decoder layer multiplies each branch output by it
    logit_factor: Factor | None = None  # the model multiplies the unembedding output by it
    softcap_config: str | None = None  # config field with the final-logit soft cap
    # Falcon's parallel block adds the attention output INTO the MLP's output tensor in place: a hook that
    # keeps the MLP output must clone it, or it reads MLP + attention.
    mlp_output_in_place: bool = False
    hugging_face: bool = True  # takes use_cache=False and returns an output with .logits

    # -- where the parts are ------------------------------------------------------------------

    def base(self, model: nn.Module) -> nn.Module:
        """The decoder stack without the unembedding."""
        return _path(model, self.body_path)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder blocks, in order; block i maps residual i to residual i + 1."""
        return _path(model, self.layers_path)

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm applied to the last residual before the unembedding."""
        return _path(model, self.final_norm_path)

    def unembed(self, model: nn.Module) -> nn.Module:
        """d_model -> vocab (with its bias where it has one, as Phi's)."""
        return _path(model, self.unembed_path) if self.unembed_path else model.get_output_embeddings()

    def embed(self, model: nn.Module) -> nn.Module:
        """The token embedding table (its output times ``embedding_scale`` is residual 0)."""
        return _path(model, self.embed_path) if self.embed_path else model.get_input_embeddings()

    def attention(self, layer: nn.Module) -> nn.Module:
        return _path(layer, self.attention_path)

    def attn_out_proj(self, layer: nn.Module) -> nn.Module:
        """The attention's output projection; its input is the heads' outputs concatenated."""
        return _path(layer, self.attn_out_proj_path)

    def mlp(self, layer: nn.Module) -> nn.Module:
        """The MLP site: the MLP, or the whole mixture-of-experts block; tuple outputs count by their first element."""
        return _path(layer, self.mlp_path)

    def is_moe(self, layer: nn.Module) -> bool:
        """Whether this layer's MLP is a mixture of experts (some MoE models keep dense layers too)."""
        return bool(self.moe_marker) and hasattr(self.mlp(layer), self.moe_marker)

    def mlp_out_proj(self, layer: nn.Module) -> nn.Module | None:
        """The dense MLP's output projection (its input is the neurons); None for a mixture of experts."""
        if self.is_moe(layer) or not self.mlp_out_proj_path or not _resolves(layer, self.mlp_out_proj_path):
            return None
        return _path(layer, self.mlp_out_proj_path)

    def attn_branch(self, layer: nn.Module) -> nn.Module:
        """The module whose output is what the attention adds to the residual stream in ``layer``,
        before ``residual_scale`` (a post-norm in Gemma 2/3, OLMo 2/3, GLM-4, EXAONE 4)."""
        return _path(layer, self.attn_branch_path) if self.attn_branch_path else self.attention(layer)

    def mlp_branch(self, layer: nn.Module) -> nn.Module:
        """The module whose output is what the MLP adds to the residual stream in ``layer``, before ``residual_scale``."""
        return _path(layer, self.mlp_branch_path) if self.mlp_branch_path else self.mlp(layer)

    def d_model(self, model: nn.Module) -> int:
        """Width of the residual stream (OLMo-1's final norm has no weight to read it from)."""
        norm = self.final_norm(model)
        weight = getattr(norm, "weight", None)
        return int(weight.shape[-1]) if weight is not None else int(norm.normalized_shape[-1])

    # -- how the residual stream is formed -----------------------------------------------------

    def parallel(self, model_or_layer: nn.Module) -> bool:
        """Whether attention and MLP both read the block input, so block output = input + attn + MLP
        (GPT-NeoX / StableLM with use_parallel_residual, Cohere, Phi, Falcon's parallel_attn)."""
        if self.parallel_always or not self.parallel_flags:
            return self.parallel_always
        holders = [model_or_layer, getattr(model_or_layer, "config", None)]
        if hasattr(model_or_layer, "get_input_embeddings"):
            holders.append(text_config(model_or_layer))
        return any(bool(getattr(h, flag, False)) for h in holders if h is not None for flag in self.parallel_flags)

    def residual_scale(self, model: nn.Module) -> float:
        """Factor the decoder layer applies to what attention and MLP add: block output = input +
        residual_scale · (attn branch output + MLP branch output). Granite's residual_multiplier; 1.0 otherwise.
        The branch modules' outputs do NOT include it: the decoder layer multiplies afterwards."""
        return self.residual_factor.of(text_config(model)) if self.residual_factor else 1.0

    def embedding_scale(self, model: nn.Module) -> float:
        """Factor the model's forward applies to ``embed``'s output to form residual 0 (Granite's
        embedding_multiplier). Gemma's embedding modules scale by √d_model themselves, so 1.0 for them."""
        return self.embedding_factor.of(text_config(model)) if self.embedding_factor else 1.0

    def logit_scale(self, model: nn.Module) -> float:
        """Factor the model applies to the unembedding's output before any soft cap
        (Granite: 1 / logits_scaling; Cohere: logit_scale; 1.0 otherwise)."""
        return self.logit_factor.of(text_config(model)) if self.logit_factor else 1.0

    def softcap(self, model: nn.Module) -> float | None:
        """Final-logit soft cap (Gemma 2/3 configs may set one), applied after ``logit_scale``:
        logits = cap * tanh(logits / cap)."""
        if not self.softcap_config:
            return None
        return getattr(text_config(model), self.softcap_config, None) or None

    # -- norms: the one place that knows how each family stores them -------------------------

    def norm_gamma(self, norm: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The effective elementwise scale γ of any norm module of this model, in ``dtype`` (ones if it has no
        weight). Gemma's and Nemotron's norms store γ − 1 and multiply by (1 + weight); torch's own norm classes
        never do. The offset is added in ``dtype`` (float64 for frozen norms: exact)."""
        weight = getattr(norm, "weight", None)
        if weight is None:
            return torch.ones(norm.normalized_shape, dtype=dtype)
        offset = 0.0 if type(norm) in (nn.LayerNorm, nn.RMSNorm) else self.gamma_offset
        gamma = weight.detach().to(dtype)
        return gamma + offset if offset else gamma

    def norm_eps(self, norm: nn.Module) -> float:
        for name in ("variance_epsilon", "eps", "epsilon"):
            eps = getattr(norm, name, None)
            if eps is not None:
                return float(eps)
        if isinstance(norm, nn.RMSNorm):  # eps=None means the dtype's machine epsilon
            return float(torch.finfo(norm.weight.dtype if norm.weight is not None else torch.float32).eps)
        return 1e-5  # OLMo-1's parameter-free LayerNorm hard-codes F.layer_norm's default

    def norm_spec(self, norm: nn.Module) -> NormSpec:
        """What ``norm`` computes: LayerNorm (centres, maybe a bias) or RMSNorm, its γ and eps."""
        centres = isinstance(norm, nn.LayerNorm) or (self.norm_centres and not isinstance(norm, nn.RMSNorm))
        bias = getattr(norm, "bias", None)
        return NormSpec(centres, self.norm_gamma(norm), None if bias is None else bias.detach().float(),
                        self.norm_eps(norm))

    def norm_weight(self, model: nn.Module) -> torch.Tensor:
        """The effective elementwise scale γ of the final norm."""
        return self.norm_gamma(self.final_norm(model))

    # -- running it ---------------------------------------------------------------------------

    def run_body(self, model: nn.Module, **inputs):
        """The decoder stack without the unembedding (inputs: input_ids, attention_mask, position_ids)."""
        if not self.hugging_face:
            return model(**inputs)  # TinyLM: computing its logits too costs nothing
        return self.base(model)(**inputs, use_cache=False)

    def run_logits(self, model: nn.Module, **inputs) -> torch.Tensor:
        """The model's own forward pass -> logits [batch, pos, vocab]."""
        if not self.hugging_face:
            return model(**inputs)
        return model(**inputs, use_cache=False).logits

    # -- conformance ----------------------------------------------------------------------------

    def missing(self, model: nn.Module) -> list[str]:
        """The parts (method names) this entry names that ``model`` does not have; [] when it conforms."""
        gaps = [part for part, path in self._model_paths() if not _resolves(model, path, part)]
        if "layers" in gaps or not len(self.layers(model)):
            return gaps + [part for part, path in self._layer_paths() if path is not None]
        layer = self.layers(model)[0]
        return gaps + [part for part, path in self._layer_paths() if path is not None and not _resolves(layer, path)]

    def _model_paths(self):
        return (("base", self.body_path), ("layers", self.layers_path), ("final_norm", self.final_norm_path),
                ("unembed", self.unembed_path), ("embed", self.embed_path))

    def _layer_paths(self):
        return (("attention", self.attention_path), ("attn_out_proj", self.attn_out_proj_path),
                ("mlp", self.mlp_path), ("attn_branch", self.attn_branch_path), ("mlp_branch", self.mlp_branch_path))

    def quirks(self) -> tuple[str, ...]:
        """How this family's residual stream differs from Llama's, in a few words each (for a table)."""
        said = [
            "parallel attention + MLP" if self.parallel_always else "",
            f"parallel when {' or '.join(self.parallel_flags)}" if self.parallel_flags else "",
            "post-norms on both branches" if self.attn_branch_path else "",
            "mixture-of-experts MLP" if self.moe_marker else "",
            "LayerNorm" if self.norm_centres else "",
            f"norms multiply by ({self.gamma_offset:g} + weight)" if self.gamma_offset else "",
            f"embeddings × {self.embedding_factor}" if self.embedding_factor else "",
            f"branches × {self.residual_factor}" if self.residual_factor else "",
            f"logits × {self.logit_factor}" if self.logit_factor else "",
            f"logit soft cap config.{self.softcap_config}" if self.softcap_config else "",
            "attention added into the MLP output in place" if self.mlp_output_in_place else "",
        ]
        return tuple(s for s in said if s)


LLAMA = Adapter("llama", ())  # the defaults: sequential pre-norm blocks, RMSNorm, o_proj / down_proj
MOE = replace(LLAMA, family="moe", moe_marker="experts")
POST_NORMS = dict(attn_branch_path="post_attention_layernorm", mlp_branch_path="post_feedforward_layernorm")
GEMMA = replace(LLAMA, family="gemma", gamma_offset=1.0)  # embeddings scale by √d inside their own module
GRANITE = replace(LLAMA, family="granite", embedding_factor=Factor("embedding_multiplier"),
                  residual_factor=Factor("residual_multiplier"), logit_factor=Factor("logits_scaling", -1.0))
COHERE = replace(LLAMA, family="cohere", parallel_always=True, norm_centres=True, logit_factor=Factor("logit_scale"))

ADAPTERS: tuple[Adapter, ...] = (
    replace(LLAMA, model_types=("llama", "mistral", "qwen2", "qwen3", "ministral", "phi3", "smollm3", "helium",
                                "glm", "seed_oss", "arcee", "apertus", "ernie4_5", "hunyuan_v1_dense", "bitnet")),
    replace(MOE, model_types=("mixtral", "qwen3_moe", "qwen2_moe", "olmoe", "phimoe", "deepseek_v2", "deepseek_v3",
                              "dots1", "glm4_moe", "ernie4_5_moe", "hunyuan_v1_moe", "gpt_oss")),
    replace(LLAMA, family="olmo", model_types=("olmo",), norm_centres=True),  # parameter-free LayerNorms
    replace(LLAMA, family="olmo2", model_types=("olmo2", "olmo3", "exaone4"), **POST_NORMS),
    replace(LLAMA, family="glm4", model_types=("glm4",), attn_branch_path="post_self_attn_layernorm",
            mlp_branch_path="post_mlp_layernorm"),
    replace(GEMMA, model_types=("gemma",)),
    replace(GEMMA, family="vaultgemma", model_types=("vaultgemma",), softcap_config="final_logit_softcapping"),
    replace(GEMMA, family="gemma2", model_types=("gemma2", "gemma3_text"), softcap_config="final_logit_softcapping",
            **POST_NORMS),
    # Gemma 3 4B and up (Gemma3ForConditionalGeneration), read as its text model; that forward applies no soft cap.
    replace(GEMMA, family="gemma3", model_types=("gemma3",), body_path="model.language_model",
            layers_path="model.language_model.layers", final_norm_path="model.language_model.norm", **POST_NORMS),
    replace(GRANITE, model_types=("granite",)),
    replace(GRANITE, family="granitemoe", model_types=("granitemoe",), mlp_path="block_sparse_moe",
            mlp_out_proj_path=None, moe_marker="experts"),
    replace(COHERE, model_types=("cohere", "cohere2")),
    replace(LLAMA, family="nemotron", model_types=("nemotron",), gamma_offset=1.0),  # LayerNorm1P: (1 + w)
    replace(LLAMA, family="stablelm", model_types=("stablelm",), parallel_flags=("use_parallel_residual",)),
    replace(LLAMA, family="starcoder2", model_types=("starcoder2",), mlp_out_proj_path="mlp.c_proj"),
    replace(LLAMA, family="persimmon", model_types=("persimmon",), final_norm_path="model.final_layernorm",
            attn_out_proj_path="self_attn.dense", mlp_out_proj_path="mlp.dense_4h_to_h"),
    replace(LLAMA, family="phi", model_types=("phi",), parallel_always=True, final_norm_path="model.final_layernorm",
            attn_out_proj_path="self_attn.dense", mlp_out_proj_path="mlp.fc2"),
    Adapter("falcon", ("falcon",), body_path="transformer", layers_path="transformer.h",
            final_norm_path="transformer.ln_f", attention_path="self_attention", attn_out_proj_path="self_attention.dense",
            mlp_out_proj_path="mlp.dense_4h_to_h", parallel_flags=("parallel_attn", "new_decoder_architecture"),
            mlp_output_in_place=True),
    Adapter("gpt2", ("gpt2", "gpt_bigcode"), body_path="transformer", layers_path="transformer.h",
            final_norm_path="transformer.ln_f", attention_path="attn", attn_out_proj_path="attn.c_proj",
            mlp_out_proj_path="mlp.c_proj"),
    Adapter("gpt_neox", ("gpt_neox",), body_path="gpt_neox", layers_path="gpt_neox.layers",
            final_norm_path="gpt_neox.final_layer_norm", attention_path="attention", attn_out_proj_path="attention.dense",
            mlp_out_proj_path="mlp.dense_4h_to_h", parallel_flags=("use_parallel_residual",)),
    Adapter("tinylm", ("tinylm",), body_path="", layers_path="blocks", final_norm_path="ln_f", unembed_path="lm_head",
            embed_path="tok_emb", attention_path="attn", attn_out_proj_path="attn.out_proj",
            mlp_out_proj_path="mlp.out_proj", hugging_face=False),
)

# Every supported model_type -> its entry (a `python -m core architectures` table: type, family, quirks).
ARCHITECTURES: dict[str, Adapter] = {t: a for a in ADAPTERS for t in a.model_types}
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)

PART_WORDS = {
    "base": "decoder stack", "layers": "decoder layers", "final_norm": "final norm", "unembed": "unembedding",
    "embed": "embedding", "attention": "attention", "attn_out_proj": "attention output projection", "mlp": "MLP",
}


def in_features(module: nn.Module) -> int:
    """Input width of a Linear or of GPT-2's transposed Conv1D."""
    if hasattr(module, "in_features"):
        return int(module.in_features)
    return int(module.weight.shape[0])  # transformers.pytorch_utils.Conv1D stores [in, out]


def model_type_of(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__.lower()


def missing(model: nn.Module) -> list[str]:
    """The parts (method names) that no entry's attribute path finds in ``model``: what a new entry must name."""
    def found(holder, part: str) -> bool:
        paths = {dict(a._model_paths() + a._layer_paths())[part] for a in ADAPTERS}
        return holder is not None and any(_resolves(holder, path, part) for path in paths)

    gaps = [part for part in ("base", "layers", "final_norm", "unembed", "embed") if not found(model, part)]
    layers = next((_path(model, a.layers_path) for a in ADAPTERS if _resolves(model, a.layers_path)), None)
    layer = layers[0] if layers is not None and len(layers) else None
    return gaps + [part for part in ("attention", "attn_out_proj", "mlp") if not found(layer, part)]


def adapter_for(model: nn.Module) -> Adapter:
    """The entry for this model's type, checked against the model; a one-line UserError naming what is missing."""
    model_type = model_type_of(model)
    adapter = ARCHITECTURES.get(model_type)
    where = f"add an entry to ADAPTERS in core/models/adapters.py; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
    if adapter is None:
        gaps = missing(model)
        found = (f"no known attribute path finds its {', '.join(f'{p} ({PART_WORDS[p]})' for p in gaps)}" if gaps else
                 f"known attribute paths find its {', '.join(PART_WORDS.values())}; its decoder layer's forward "
                 f"decides the rest")
        raise UserError(f"architecture '{model_type}' ({type(model).__name__}) is not supported: no adapter says how "
                        f"its residual stream is formed, and {found} ({where})")
    gaps = adapter.missing(model)
    if gaps:
        raise UserError(f"architecture '{model_type}' ({type(model).__name__}) does not match layerscope's "
                        f"'{adapter.family}' adapter: it has no {', '.join(gaps)} ({where})")
    return adapter
