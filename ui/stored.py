"""The server's result store as the app uses it: what identifies a result (its model's fingerprint, the tuned
lens's file, a second model's fingerprint), finding one before the model is loaded, keeping one, and bundles.

A result is found by (analysis, settings, fingerprint, analysis version). The fingerprint is the loaded
model's ``handle.fingerprint()`` (spec, dtype, quantization, a hash of the weights) when the model is loaded;
before that, the one the model had when it was last loaded here (``core.results.models``), so a link after a
restart shows its stored result while the model loads. Such a result is *provisional*: ``ui.results`` confirms
it once the model is loaded (same fingerprint) or computes it again (the weights changed under the same spec).
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import streamlit as st

from core.results.keys import analysis_version, settings_json, settings_key
from ui.model import ModelChoice, loaded_model, other_choice

log = logging.getLogger("layerscope")
_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()
_LENS_HASHES: dict[tuple, str] = {}
MEMORY = OrderedDict()  # results not kept in the store (views such as drill-downs), shared by sessions
MEMORY_ENTRIES = 64
_MEMORY_LOCK = threading.Lock()


def result_store():
    """This server's ResultStore (one per $LAYERSCOPE_HOME), or None when LAYERSCOPE_HISTORY is off."""
    from core.models.gguf_cache import cache_home
    from core.results.store import ResultStore, history_on

    if not history_on():
        return None
    home = str(cache_home())
    with _STORES_LOCK:
        if home not in _STORES:
            _STORES[home] = ResultStore(home)
        return _STORES[home]


def _lens_hash(folder: Path) -> str | None:
    """A hash of a tuned lens's files (None when the folder holds no lens), cached by size and time."""
    files = [folder / "config.json", folder / "params.pt"]
    try:
        stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    except OSError:
        return None
    if stamp not in _LENS_HASHES:
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as data:
                for block in iter(lambda: data.read(1 << 20), b""):
                    digest.update(block)
        _LENS_HASHES[stamp] = digest.hexdigest()[:16]
    return _LENS_HASHES[stamp]


def _base(choice: ModelChoice, handle) -> tuple[str | None, dict]:
    """(fingerprint, info) of the model: the loaded handle's, else the remembered one (None if never loaded)."""
    from core.results.models import recall

    if handle is not None:
        try:
            return handle.fingerprint(), {}
        except Exception:  # noqa: BLE001 - a handle without weights here (NDIF): its results are not kept
            return None, {}
    remembered = recall(choice.key)
    return (remembered["fingerprint"], remembered.get("info") or {}) if remembered else (None, {})


def fingerprint(choice: ModelChoice, settings: Any, others: dict[str, str] | None = None,
                handle=None) -> tuple[str | None, bool]:
    """(what the stored result's model must have been, whether it comes from memory rather than the loaded model).

    The model's fingerprint, plus the tuned lens's file hash when the settings read with one, plus each other
    model's fingerprint (a comparison with a second model). None when any part is unknown."""
    handle = handle if handle is not None else loaded_model(choice)
    base, info = _base(choice, handle)
    if base is None:
        return None, False
    parts, provisional = [base], handle is None
    if getattr(settings, "lens", None) == "tuned":
        folder = getattr(settings, "lens_path", None)
        if not folder:
            if handle is not None:
                from core.lenses import default_lens_dir

                folder = default_lens_dir(handle)
            else:
                folder = info.get("lens_dir")
        lens = _lens_hash(Path(folder)) if folder else None
        if lens is None:
            return None, False
        parts.append(f"lens={lens}")
    for name, spec in sorted((others or {}).items()):
        other = other_choice(spec)
        other_handle = loaded_model(other)
        fp, _ = _base(other, other_handle)
        if fp is None:
            return None, False
        provisional = provisional or other_handle is None
        parts.append(f"{name}={spec}:{fp}")
    return ";".join(parts), provisional


def find(analysis: str, keyed: Any, fp: str) -> tuple[Any, Any] | None:
    """(entry, result) stored for these settings and fingerprint; a damaged file is skipped with a warning."""
    from core.results.codec import CodecError
    from core.results.store import CorruptResult

    store = result_store()
    if store is None:
        return None
    try:
        key = settings_key(analysis, keyed, analysis_version(analysis))
    except CodecError:  # settings the store cannot say (never stored either)
        return None
    try:
        id = store.find(analysis, key, fp, analysis_version(analysis))
        if id is None:
            return None
        return store.entry(id), store.get(id)
    except CorruptResult as err:
        st.warning(f"A stored result could not be read ({err.reason[:160]}): computing it again.")
        return None
    except Exception as err:  # noqa: BLE001 - the store is a convenience: never a reason to fail a page
        log.exception("result store lookup failed")
        st.caption(f"The result store could not be read ({type(err).__name__}): computing.")
        return None


def keep(analysis: str, keyed: Any, fp: str, result: Any, seconds: float, model: str, link: str) -> str | None:
    """Store a result (its id), or None when history is off or it cannot be stored (a caption says so)."""
    store = result_store()
    if store is None:
        return None
    try:
        return store.put(analysis, keyed, fp, result, seconds, model=model, link=link)
    except Exception as err:  # noqa: BLE001 - a result that cannot be kept is still shown
        log.exception("result store write failed")
        st.caption(f"This result could not be kept in History ({type(err).__name__}: {str(err)[:120]}).")
        return None


def memory_key(analysis: str, keyed: Any, fp: str) -> str | None:
    from core.results.codec import CodecError

    try:
        return f"{analysis}|{fp}|{settings_key(analysis, keyed, analysis_version(analysis))}"
    except CodecError:
        return None


def remembered(key: str | None) -> Any | None:
    if key is None:
        return None
    with _MEMORY_LOCK:
        if key in MEMORY:
            MEMORY.move_to_end(key)
            return MEMORY[key]
    return None


def remember(key: str | None, result: Any) -> None:
    if key is None:
        return
    with _MEMORY_LOCK:
        MEMORY[key] = result
        while len(MEMORY) > MEMORY_ENTRIES:
            MEMORY.popitem(last=False)


def bundle_bytes(analysis: str, keyed: Any, result: Any, model: str, info: dict | None = None,
                 command: str | None = None) -> bytes:
    """One zip: settings, the CLI's JSON, every table as CSV, every chart as PNG and SVG, the command line."""
    from core.results.bundle import write_bundle
    from core.results.store import _command_line

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bundle.zip"
        cli = command if command is not None else _command_line(analysis, keyed, model)
        write_bundle(out, analysis, keyed, result, model, command=cli, info=info)
        return out.read_bytes()


def stored_bundle(id: str) -> bytes:
    """The bundle of a stored result (History's download)."""
    from core.results.bundle import export_stored

    with tempfile.TemporaryDirectory() as folder:
        path, _ = export_stored(result_store(), id, Path(folder) / "bundle.zip")
        return io.BytesIO(path.read_bytes()).getvalue()


def describe(settings: Any, limit: int = 140) -> str:
    """Settings in one line for people (long texts and lists cut)."""
    parts = []
    for name, value in settings_json(settings).items():
        text = value if isinstance(value, str) else str(value)
        parts.append(f"{name}={text[:40] + '…' if len(text) > 40 else text}")
    line = " · ".join(parts)
    return line[:limit] + ("…" if len(line) > limit else "")
