"""Model loads that outlive whoever asked for them: one background load per model, shared by a whole server.

A first load can include a one-time GGUF conversion. It must not belong to the visitor who started
it: if that browser tab closes, the load goes on, every session that asks for the same model waits
on the same job and sees its progress, and two sessions arriving together start it once. Finished
models are kept (least recently asked-for dropped beyond ``max_models``); a failed load is not
kept, so asking again retries it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable

from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress

log = logging.getLogger("layerscope")


class LoadJob:
    """One model load running in its own thread; any number of sessions may wait on it."""

    def __init__(self, key: Hashable, load: Callable[[Progress], ModelHandle]):
        self.key = key
        self.started = time.monotonic()
        self.fraction = 0.0
        self.message = "starting"
        self.handle: ModelHandle | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(load,), name=f"load {key}", daemon=True)

    def start(self) -> "LoadJob":
        self._thread.start()
        return self

    def report(self, fraction: float, message: str) -> None:
        """The load's progress callback: fractions only rise, so every waiting session sees a steady bar."""
        self.fraction = max(self.fraction, min(max(float(fraction), 0.0), 1.0))
        self.message = message

    def _run(self, load) -> None:
        try:
            self.handle = load(self.report)
        except BaseException as err:  # noqa: BLE001 - handed to every waiting session
            if not isinstance(err, UserError):
                log.exception("model load %s failed", self.key)
            self.error = err
        finally:
            self.fraction = 1.0
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """True once the load has finished (or failed)."""
        return self._done.wait(timeout)

    def result(self) -> ModelHandle:
        """The loaded model, waiting for it; re-raises the load's error."""
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.handle


class ModelLoads:
    """The server's loads, keyed by (spec, options): ``request`` returns the running or finished job."""

    def __init__(self, max_models: int = 2):
        self.max_models = max(1, int(max_models))
        self._jobs: OrderedDict[Hashable, LoadJob] = OrderedDict()
        self._lock = threading.Lock()

    def request(self, key: Hashable, load: Callable[[Progress], ModelHandle]) -> tuple[LoadJob, bool]:
        """(job, started_now): the job for ``key``, started with ``load(progress)`` unless one is running or done."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not (job.done and job.error is not None):
                self._jobs.move_to_end(key)
                return job, False
            job = LoadJob(key, load)
            self._jobs[key] = job
            self._evict()
        return job.start(), True

    def _evict(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.done]
        while len(self._jobs) > self.max_models and finished:
            self._jobs.pop(finished.pop(0))

    def running(self) -> list[LoadJob]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.done]

    def clear(self) -> None:
        """Forget every finished load (running ones finish but are not kept)."""
        with self._lock:
            self._jobs.clear()
