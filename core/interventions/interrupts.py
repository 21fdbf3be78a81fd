"""Stopping a run between two modules of a forward pass, not only at its next progress report.

``with interruptible(check):`` calls ``check()`` (in the calling thread only) before every module's forward
while it is open; ``check`` raises to stop the run (the server's Cancel: ``ui/running.py``). A batched ablation
pass between two progress reports takes 0.1–0.4 s on the default model; a module takes well under 10 ms, so a
cancelled run frees the model at once. Other threads (other visitors' runs, on other models) are untouched: the
check is thread-local, and the one global pre-hook is registered only while some run is interruptible.

Raising inside a forward is safe here because every hook of ``core.interventions`` is removed in a ``finally``
(``hooks.removing``), as the early stops at a site already rely on.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch

_local = threading.local()
_lock = threading.Lock()
_open = 0
_handle = None


def _before_forward(module, args) -> None:
    check = getattr(_local, "check", None)
    if check is not None:
        check()


@contextlib.contextmanager
def interruptible(check: Callable[[], None]) -> Iterator[None]:
    """Call ``check()`` before each module's forward in this thread until the block ends (nests: innermost wins)."""
    global _open, _handle
    with _lock:
        if _open == 0:
            _handle = torch.nn.modules.module.register_module_forward_pre_hook(_before_forward)
        _open += 1
    outer = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = outer
        with _lock:
            _open -= 1
            if _open == 0 and _handle is not None:
                _handle.remove()
                _handle = None


__all__ = ["interruptible"]
