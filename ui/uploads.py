"""Files visitors upload, kept on the server so that a link can name them: ``$LAYERSCOPE_HOME/uploads/<id>/<name>``,
where the id is a hash of the file's bytes (the same file uploaded twice is kept once)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    data: bytes


def _uploads() -> Path:
    from core.models.gguf_cache import cache_home

    return cache_home() / "uploads"


def keep_upload(name: str, data: bytes) -> str:
    """Keep an uploaded file; its id."""
    id = hashlib.sha256(data).hexdigest()[:16]
    folder = _uploads() / id
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name).strip("._") or "upload"
    if read_upload(id) is None:  # kept once, under the first name it came with
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{safe}.tmp"
        temp.write_bytes(data)
        temp.replace(folder / safe)  # atomic: a link never names half a file
    return id


def read_upload(id: str) -> Upload | None:
    """The file kept under ``id`` (None for an id that is malformed or not on this server)."""
    if not re.fullmatch(r"[0-9a-f]{16}", id or ""):
        return None
    files = sorted(p for p in (_uploads() / id).glob("*") if p.is_file() and not p.name.startswith("."))
    return Upload(id, files[0].name, files[0].read_bytes()) if files else None
