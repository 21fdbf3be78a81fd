"""A training run in a background thread, so a Streamlit page stays responsive while it trains.

The page keeps one `TrainingRun` (``start(settings)``), polls `status()` to redraw, and calls `stop()` /
`resume()`. Only the training thread touches the model while it runs; the page reads the model
(generation, attention maps) only once `running` is False, through `result()`.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass

from core.analyses.train.analysis import Result, Settings, result_of, trainer_for
from core.analyses.train.checkpoint import TrainedLM
from core.analyses.train.trainer import Trainer, TrainingHistory
from core.errors import UserError
from core.progress import Progress


@dataclass(frozen=True)
class TrainingStatus:
    """A consistent-enough view of a run for one redraw."""

    step: int
    total_steps: int
    running: bool
    history: TrainingHistory
    error: str | None


class TrainingRun:
    """Owns a Trainer and the thread that advances it."""

    def __init__(self, trainer: Trainer, settings: Settings | None = None, progress: Progress | None = None):
        self.trainer, self.settings, self.progress = trainer, settings, progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self._result: Result | None = None  # the last result() while the trainer stays at its step

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def can_resume(self) -> bool:
        return not self.running and not self.trainer.finished and self.error is None

    def start(self) -> TrainingRun:
        """Start (or resume) training in the background; returns self."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._train, name="tinylm-training", daemon=True)
        self._thread.start()
        return self

    resume = start

    def stop(self) -> None:
        """Ask the thread to stop after its current step (it evaluates once more, then exits)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread ends (or `timeout` seconds pass); True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def status(self) -> TrainingStatus:
        history = self.trainer.history
        snapshot = TrainingHistory(
            list(history.train_loss_nats),
            list(history.evals),
            history.bigram_val_loss_nats,
            history.train_seconds,
            history.train_tokens,
        )
        return TrainingStatus(self.trainer.step, self.trainer.config.steps, self.running, snapshot, self.error)

    def trained(self) -> TrainedLM:
        """The model as it is now, for generation and inspection (only while not running)."""
        return self.result().trained

    def result(self) -> Result:
        """The run so far as the analysis's ``Result`` (only while not running)."""
        if self.running:
            raise UserError("training is still running; stop it or wait for it to finish")
        if self._result is None or self._result.steps != self.trainer.step:
            self._result = result_of(self.trainer, self.settings)
        return self._result

    def _train(self) -> None:
        try:
            self.trainer.run(self._stop, self.progress)
        except UserError as err:
            self.error = str(err)
        except Exception:  # a bug: keep the details for the page, which shows them without a traceback
            self.error = "training failed: " + traceback.format_exc(limit=1).strip().splitlines()[-1]


def start(settings: Settings, progress: Progress | None = None) -> TrainingRun:
    """Tokenize the corpus, build the model and start training it in the background.
    Bad settings raise UserError here, before any thread starts."""
    return TrainingRun(trainer_for(settings), settings, progress).start()
