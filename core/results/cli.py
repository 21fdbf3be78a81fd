"""``--store`` for analysis commands: keep the command's Result in the store, where the app's History lists it.

A command opts in with two lines::

    def add_arguments(parser):
        ...
        add_store_option(parser)

    def run(args) -> dict:
        ...
        return run_and_store(args, "lens", handle, settings, run_analysis, progress).to_json()

``run_and_store`` times the run and, under ``--store``, puts the Result in the store with its settings, the
model's fingerprint and the equivalent command line; the id goes to stderr (stdout keeps only the JSON).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

MODEL_OPTIONS = ("dtype", "quantization", "device", "backend")


def add_store_option(parser) -> None:
    parser.add_argument("--store", action="store_true",
                        help="keep the result in $LAYERSCOPE_HOME/results, where the app's History lists it "
                             "(its id is printed on stderr; see `python -m core results`)")


def model_fingerprint(handle, options: dict | None = None) -> str:
    """What makes two runs of one model comparable: ``handle.fingerprint()`` where the handle has one, else its
    spec, dtype, quantization and architecture (and the load options asked for)."""
    fingerprint = getattr(handle, "fingerprint", None)
    if callable(fingerprint):
        return str(fingerprint())
    parts = {"spec": handle.spec, "dtype": str(getattr(handle, "dtype", "")),
             "quantization": str(getattr(handle, "quantization", "")), "architecture": str(getattr(handle, "architecture", ""))}
    if (options or {}).get("backend", "local") != "local":  # NDIF and nnsight bring back other numbers
        parts["backend"] = str(options["backend"])
    return ";".join(f"{k}={v}" for k, v in parts.items())


def run_and_store(args, analysis: str, handle, settings, run: Callable, progress=None) -> Any:
    """``run(handle, settings[, progress])``, timed; under ``--store`` the Result is stored too."""
    started = time.perf_counter()
    result = run(handle, settings) if progress is None else run(handle, settings, progress)
    if getattr(args, "store", False):
        store_result(args, analysis, handle, settings, result, time.perf_counter() - started)
    return result


def store_result(args, analysis: str, handle, settings, result, seconds: float) -> str | None:
    """Put ``result`` in the store; its id (printed on stderr), or None when history is off or it cannot be stored."""
    from core.results.codec import CodecError
    from core.results.commandline import cli_command
    from core.results.store import ResultStore, history_on

    if not history_on():
        print("not stored: LAYERSCOPE_HISTORY is off", file=sys.stderr)
        return None
    options = {name: getattr(args, name) for name in MODEL_OPTIONS if hasattr(args, name)}
    try:
        cli = cli_command(analysis, settings, handle.spec, options)
    except Exception:  # noqa: BLE001 - the result is stored without its command line
        cli = ""
    try:
        id = ResultStore().put(analysis, settings, model_fingerprint(handle, options), result, seconds,
                               model=handle.spec, cli=cli)
    except (CodecError, OSError) as err:
        print(f"warning: the result was not stored: {err}", file=sys.stderr)
        return None
    print(f"stored as {id} (python -m core results show {id})", file=sys.stderr)
    return id
