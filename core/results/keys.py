"""What identifies a stored result: its settings as plain JSON, a stable key over them, the analysis's version."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib
import json
import math
import pathlib
from typing import Any


# The page that shows each analysis (pages/<page>.py), where it differs from the analysis's name.
PAGES = {"lens": "logit_lens", "attribute": "logit_lens", "tuned_lens": "logit_lens", "compare": "logit_lens"}


def page_of(analysis: str) -> str:
    """The page of an analysis; a page's sub-analysis ("sequences.circuit") is on its package's page."""
    return PAGES.get(analysis, PAGES.get(analysis.split(".")[0], analysis.split(".")[0]))


def plain(value: Any) -> Any:
    """``value`` as plain JSON for people and tables (dataclasses as dicts of their fields, tuples and sets as
    lists, non-finite floats as "nan"/"inf"/"-inf", anything else by its ``str``)."""
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return plain(value.item())
    return str(value)


def settings_json(settings: Any) -> dict:
    """The settings' fields as a plain JSON object (what History shows and ``results list`` prints)."""
    value = plain(settings)
    return value if isinstance(value, dict) else {"value": value}


def settings_key(analysis: str, settings: Any, version: str) -> str:
    """A stable hash of (analysis, every field of the settings with its type, version): equal settings of one
    analysis version give one key, in any process, whatever the fields' order."""
    from core.results import codec

    typed, arrays, frames = codec.tree(settings)  # typed: (1,) and [1] differ
    text = json.dumps({"analysis": analysis, "settings": typed, "version": str(version)}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8"))
    for name, array in arrays.items():  # an array among the settings counts by its dtype, shape and bytes
        digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    for name, data in frames.items():
        digest.update(name.encode() + data)
    return digest.hexdigest()[:32]


def analysis_version(analysis: str) -> str:
    """``VERSION`` of ``core/analyses/<analysis>/analysis.py`` ("1" where it defines none). An analysis raises
    it when a change of code changes its numbers, so that results stored before are not reused."""
    try:  # a sub-analysis ("sequences.circuit") has its package's version
        module = importlib.import_module(f"core.analyses.{analysis.split('.')[0]}.analysis")
    except ImportError:
        return "1"
    return str(getattr(module, "VERSION", "1"))
