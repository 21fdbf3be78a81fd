"""What each model was when it was last loaded here, so a stored result can be found before the model is loaded.

A stored result is keyed by its model's fingerprint (``handle.fingerprint()``: spec, dtype, quantization and a
hash of the weights), which needs the loaded model. After a restart the app must show a linked result at once,
while the model loads, so the server remembers, per model spec and load options (``key``), the fingerprint
the model had the last time it was loaded (and a few facts about it: layers, heads, where its tuned lens lives).
The app looks results up with the remembered fingerprint, shows them as *provisional*, and confirms them when
the model is loaded: a different fingerprint (new weights under the same spec) means the result is computed
again. One JSON file, ``$LAYERSCOPE_HOME/results/models.json``, replaced atomically (a lost update between two
processes only costs a recomputation).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

_lock = threading.Lock()


def _path(home: str | Path | None) -> Path:
    from core.models.gguf_cache import cache_home

    return (Path(home) if home is not None else cache_home()) / "results" / "models.json"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: forgetting costs only a recomputation
    return data if isinstance(data, dict) else {}


def remember(key: str, fingerprint: str, info: dict | None = None, home: str | Path | None = None) -> None:
    """Record that the model ``key`` (spec and load options) was just loaded with this fingerprint."""
    path = _path(home)
    with _lock:
        data = _read(path)
        if data.get(key, {}).get("fingerprint") == fingerprint and data[key].get("info") == (info or {}):
            return
        data[key] = {"fingerprint": str(fingerprint), "info": info or {}, "seen": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".models-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            temp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)


def recall(key: str, home: str | Path | None = None) -> dict | None:
    """``{"fingerprint", "info", "seen"}`` of the model ``key`` when it was last loaded here, or None."""
    found = _read(_path(home)).get(key)
    return found if isinstance(found, dict) and found.get("fingerprint") else None
