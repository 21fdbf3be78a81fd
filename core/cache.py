"""Values computed once per loaded model (a Gram matrix, successor scores…), defined once.

Keyed on the model object through a weak reference: an entry goes when its model is unloaded, and a
new model that happens to get a dead one's ``id`` never receives the dead one's values.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Hashable, TypeVar

from torch import nn

T = TypeVar("T")


class PerModel:
    """``cache.get(model, key, compute)``: compute() once per (model, key) while the model lives."""

    def __init__(self) -> None:
        self._values: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, model: nn.Module, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            entries = self._values.setdefault(model, {})
            if key in entries:
                return entries[key]
        value = compute()  # outside the lock: computing may take a while and use the model's own lock
        with self._lock:
            return self._values.setdefault(model, {}).setdefault(key, value)

    def forget(self, model: nn.Module) -> None:
        with self._lock:
            self._values.pop(model, None)
