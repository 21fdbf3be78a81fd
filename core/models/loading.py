"""Spec string + options -> a loaded ``ModelHandle``.

The specs themselves (embedded names, folders, ``.gguf`` files, hub ids) and ``LoadOptions`` are in
``core.models.specs``, which imports no torch; their names stay importable from here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.errors import UserError
from core.models import prefetch
from core.models.adapters import SUPPORTED_MODEL_TYPES, adapter_for, model_type_of, text_config
from core.models.handle import ModelHandle
from core.models.specs import (  # noqa: F401 (re-exported)
    DEFAULT_MODEL, DEVICES, DTYPES, EMBEDDED, QUANTIZATIONS, LoadOptions,
    _gemma_gguf, _package_dir, _smollm2_gguf, embedded_models, resolve_spec,
)


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


def _converted_tokenizer(folder: Path):
    """A converted GGUF folder's tokenizer: the one the CLI began building in another process if it did
    (``core.models.prefetch``), else built here from ``tokenizer.json``; None for other folders."""
    prefetched = prefetch.take(folder)  # (not `or`: its truth would wait for the child)
    return prefetched if prefetched is not None else prefetch.converted_tokenizer(folder)


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
    from core.models.tinylm_checkpoint import load_checkpoint

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
    config = text_config(model)  # multimodal checkpoints (Gemma 3 4B+) keep the language model's in text_config
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
        d_model=int(adapter.d_model(model)),
        vocab_size=int(unembed.out_features),
        dtype=str(dtype).removeprefix("torch."),
        device=adapter.embed(model).weight.device,
        quantization=quantization,
        memory_bytes=int(memory),
        context_length=int(context) if context else None,
    )
