"""Models: spec string -> ``ModelHandle`` (see ``loading``), one adapter per family (``adapters``).

The names below are imported on first use (PEP 562), so that ``core.models.specs`` and ``core.models.gguf_cache``
can be imported without torch: the CLI reads its model spec, and starts building the tokenizer in another
process, before it imports torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "ADAPTERS": "adapters", "Adapter": "adapters", "adapter_for": "adapters",
    "Batch": "handle", "ModelHandle": "handle",
    "DEFAULT_MODEL": "specs", "DEVICES": "specs", "DTYPES": "specs", "QUANTIZATIONS": "specs",
    "LoadOptions": "specs", "embedded_models": "specs",
    "load_model": "loading", "wrap_model": "loading",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:
    from core.models.adapters import ADAPTERS, Adapter, adapter_for
    from core.models.handle import Batch, ModelHandle
    from core.models.loading import load_model, wrap_model
    from core.models.specs import DEFAULT_MODEL, DEVICES, DTYPES, QUANTIZATIONS, LoadOptions, embedded_models
