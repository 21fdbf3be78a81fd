"""On-disk caches of the quanta pipeline: atomic .npz files under cache_home()/quanta.

Files are written to a temporary sibling and moved into place with ``os.replace``, so an
interrupted run never leaves a half-written file. A file that cannot be read back, or whose
recorded key differs from the one asked for, is treated as absent (and deleted), so a corrupt
cache is rebuilt instead of crashing the analysis.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from core.models.gguf_cache import cache_home
from core.models.handle import ModelHandle

FORMAT_VERSION = 1


def quanta_home() -> Path:
    return cache_home() / "quanta"


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(handle: ModelHandle) -> str:
    """Identifies the weights, not just the spec (``ModelHandle.fingerprint``)."""
    return handle.fingerprint()


def save_npz(path: Path, key: str, **arrays: np.ndarray) -> None:
    """Write arrays (plus the key they belong to) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, _key=np.array(key), _version=np.array(FORMAT_VERSION), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path | str, key: str, required: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays saved under ``key``, or None when the file is missing, corrupt or stale (then deleted)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["_key"]) != key or int(data["_version"]) != FORMAT_VERSION:
                raise ValueError("stale cache")
            arrays = {name: data[name] for name in required}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)
        return None
    return arrays
