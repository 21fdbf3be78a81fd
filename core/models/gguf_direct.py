"""GGUF file -> Hugging Face folder (config, float32 safetensors, tokenizer) without transformers' GGUF loader.

transformers' own GGUF path gives the same folder but needs ~80 s for Gemma 3 270M on 2 cores,
most of it in ``gguf.GGUFReader`` walking the 262k-token vocabulary element by element (twice).
Here the header is parsed once (``gguf_reader``), each tensor is de-quantized with
``gguf.quants.dequantize`` and renamed, and what llama.cpp's converter changed is undone:

- llama: q/k rows are permuted for llama.cpp's rotary layout; un-permuted per head here.
- gemma3: RMSNorm weights are stored as 1 + γ (llama.cpp folds in Gemma's ``1 + weight``);
  transformers' Gemma3RMSNorm adds the 1 itself, so 1 is subtracted.
- tied embeddings: llama.cpp omits ``output.weight`` when the unembedding is the embedding.

The reference is transformers' GGUF path (``modeling_gguf_pytorch_utils.py``,
``integrations/ggml.py``); tests/models/test_gguf_direct.py checks tensors, config, token ids
and logits against it.
"""

from __future__ import annotations

import re
from pathlib import Path


import numpy as np

from core.models import gguf_tokenizer
from core.models.gguf_reader import GGUFFile
from core.progress import Progress


# GGUF key (after "<arch>.") -> config field, per architecture (transformers' GGUF_CONFIG_MAPPING)
_COMMON = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
CONFIG_KEYS = {
    "llama": _COMMON | {"rope.dimension_count": "head_dim"},
    "gemma3": _COMMON | {"attention.key_length": "head_dim", "attention.sliding_window": "sliding_window"},
}
MODEL_TYPE = {"llama": "llama", "gemma3": "gemma3_text"}

# GGUF tensor name -> Hugging Face name: global tensors, then the part after "blk.N."
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA3_BLOCK = _LLAMA_BLOCK | {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
BLOCK_NAMES = {"llama": _LLAMA_BLOCK, "gemma3": _GEMMA3_BLOCK}
# tensors transformers' GGUF path drops too: nothing in the HF model holds them
_IGNORED = {"rope_freqs.weight"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def unsupported_reason(gguf: GGUFFile) -> str | None:
    """Why this file needs transformers' own GGUF path, or None when it converts here."""
    arch = gguf.architecture
    if arch not in CONFIG_KEYS:
        return f"architecture '{arch}' has no direct converter"
    if arch == "llama" and gguf.metadata.get("general.name") == "mistral":
        return "transformers reads this llama file as mistral"  # its GGUF loader's own rule
    unmapped = [name for name in gguf.tensors if name not in _IGNORED and hf_name(arch, name) is None]
    if unmapped:
        return f"tensors with no known Hugging Face name: {', '.join(unmapped[:3])}"
    return None


def hf_name(arch: str, gguf_name: str) -> str | None:
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL and suffix in ("weight", "bias"):
        return f"{_GLOBAL[stem]}.{suffix}"
    match = _BLOCK.fullmatch(gguf_name)
    if match and match[2] in BLOCK_NAMES[arch]:
        return f"model.layers.{match[1]}.{BLOCK_NAMES[arch][match[2]]}.{match[3]}"
    return None


def config_dict(gguf: GGUFFile) -> dict:
    """The config fields transformers' GGUF path reads from this file (``load_gguf_checkpoint``)."""
    arch, meta = gguf.architecture, gguf.metadata
    fields = {
        "model_type": MODEL_TYPE[arch],
        # llama.cpp writes the unembedding only when it is not the embedding matrix
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
    }
    if "general.name" in meta:
        fields["_model_name_or_path"] = meta["general.name"]
    for key, field in CONFIG_KEYS[arch].items():
        if f"{arch}.{key}" in meta:
            fields[field] = _plain(meta[f"{arch}.{key}"])
    for key, field in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                       ("unknown_token_id", "unk_token_id"), ("padding_token_id", "pad_token_id")):
        if f"tokenizer.ggml.{key}" in meta:
            fields[field] = _plain(meta[f"tokenizer.ggml.{key}"])
    if "vocab_size" not in fields and "tokenizer.ggml.tokens" in meta:
        fields["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    return fields


def _plain(value):
    """numpy arrays (a per-layer list in some files) as the lists transformers' reader gives."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
        return value[0] if len(value) == 1 else value
    return value


def hf_tensor(gguf: GGUFFile, name: str, config: dict) -> np.ndarray:
    """One tensor de-quantized to float32, in the layout the Hugging Face model expects."""
    weights = gguf.float32(name)
    if gguf.architecture == "llama" and (".attn_q." in name or ".attn_k." in name):
        heads = config["num_attention_heads"] if ".attn_q." in name else config["num_key_value_heads"]
        weights = _unpermute_rotary(weights, heads)
    elif gguf.architecture == "gemma3" and name.endswith("norm.weight"):
        weights = weights - np.float32(1)  # stored as 1 + γ
    return weights


def _unpermute_rotary(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp interleaves each head's rotary halves (rows 0, d/2, 1, d/2+1, ...); undo it.

    ``weights``: float32[heads * head_dim, d_model] (a bias: [heads * head_dim]).
    """
    half = weights.shape[0] // heads // 2
    per_head = weights.reshape(heads, half, 2, *weights.shape[1:])
    return np.ascontiguousarray(per_head.swapaxes(1, 2).reshape(weights.shape))


def write_config(gguf: GGUFFile, folder: Path) -> dict:
    """config.json and generation_config.json, as transformers' GGUF path saves them."""
    from transformers import CONFIG_MAPPING, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    fields = config_dict(gguf)
    config = CONFIG_MAPPING[fields["model_type"]].from_dict(fields)
    config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[fields["model_type"]]]
    config.dtype = "float32"
    config.save_pretrained(folder)
    GenerationConfig.from_model_config(config).save_pretrained(folder)
    return fields


def write_weights(gguf: GGUFFile, fields: dict, folder: Path, progress: Progress, start: float, end: float):
    """model.safetensors: every tensor in float32 under its Hugging Face name.

    Progress runs from ``start`` to ``end``: de-quantizing takes the first 70 % (in proportion
    to the elements done, so the 168M-element Gemma embedding is most of it), writing the rest.
    """
    from safetensors.numpy import save_file

    arch = gguf.architecture
    names = [name for name in gguf.tensors if name not in _IGNORED]
    sizes = {name: int(np.prod(gguf.tensors[name].shape)) for name in names}
    total, done, layers_seen = sum(sizes.values()), 0, set()
    layers = fields.get("num_hidden_layers") or "?"
    split = start + (end - start) * 0.7
    tensors = {}
    for name in names:
        match = _BLOCK.fullmatch(name)
        if match and match[1] not in layers_seen:  # one message per layer block
            layers_seen.add(match[1])
            progress(start + (split - start) * done / total, f"de-quantizing layer {len(layers_seen)} of {layers}")
        elif not match and sizes[name] > total // 20:  # the embedding: a long step of its own
            info = gguf.tensors[name]
            shape = " x ".join(f"{d:,}" for d in info.shape)
            progress(start + (split - start) * done / total, f"de-quantizing {name} ({shape}, {info.quant.name})")
        tensors[hf_name(arch, name)] = hf_tensor(gguf, name, fields)
        done += sizes[name]
    gib = sum(t.nbytes for t in tensors.values()) / 2**30
    progress(split, f"writing model.safetensors ({gib:.1f} GiB of float32)")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    progress(end, "model.safetensors written")


def convert_direct(gguf: GGUFFile, folder: Path, progress: Progress) -> None:
    """Fill ``folder`` with the Hugging Face model ``gguf`` describes (``unsupported_reason`` is None).

    Progress fractions run from 0.05 to 0.98; the caller reports the rest.
    """
    progress(0.05, f"{gguf.architecture}: writing config.json")
    fields = write_config(gguf, folder)
    vocab = len(gguf.metadata.get("tokenizer.ggml.tokens", ()))
    if gguf_tokenizer.tokenizer_kind(gguf):
        progress(0.08, f"building the tokenizer ({vocab:,} tokens)")
        gguf_tokenizer.write_tokenizer(gguf, folder)
    else:
        progress(0.08, f"building the tokenizer with transformers ({vocab:,} tokens; slower: "
                       "its GGUF reader walks every token)")
        _transformers_tokenizer(gguf.path, folder)
    write_weights(gguf, fields, folder, progress, 0.25, 0.98)


def _transformers_tokenizer(gguf_path: Path, folder: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(folder)
