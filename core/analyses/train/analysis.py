"""Train from scratch as an analysis: ``Settings`` (corpus, tokenizer, shape, training) → ``run`` → ``Result``.

Training starts from random weights, so ``run`` takes no loaded model: its first argument (the
protocol's ``handle``) is None. ``run`` trains to the last step in the calling thread (the CLI, the
bench, tests); the page trains in a background thread instead (``background.start``: stop, resume,
a ``TrainingStatus`` per redraw) and turns the run into the same ``Result`` once it has stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.analyses.base import Settings as BaseSettings
from core.analyses.train.checkpoint import TrainedLM
from core.analyses.train.corpora import DEFAULT_CORPUS, Corpus, load_corpus
from core.models.tinylm import TinyLMConfig
from core.analyses.train.tokenization import DEFAULT_BPE_VOCAB, TOKENIZER_KINDS, check_bpe_vocab
from core.analyses.train.trainer import TrainConfig, Trainer, TrainingHistory, tokenize_corpus
from core.errors import UserError
from core.progress import Progress

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers


@dataclass(frozen=True)
class Settings(BaseSettings):
    """What to train: ``corpus`` (a shipped corpus name, a text file's path, or the text itself, e.g. an
    upload), the ``tokenizer`` fitted to it ("char", or "bpe" with ``bpe_vocab`` tokens), the model's
    ``shape`` (its vocabulary size comes from the tokenizer) and the ``training`` options."""

    corpus: str | Corpus = DEFAULT_CORPUS
    tokenizer: str = "char"
    bpe_vocab: int = DEFAULT_BPE_VOCAB
    shape: TinyLMConfig = field(default_factory=TinyLMConfig)
    training: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Shape and training options check themselves when built (``TinyLMConfig``, ``TrainConfig``)."""
        if self.tokenizer not in TOKENIZER_KINDS:
            raise UserError(f"unknown tokenizer {self.tokenizer!r}: use one of {', '.join(TOKENIZER_KINDS)}")
        if self.tokenizer == "bpe":
            check_bpe_vocab(self.bpe_vocab)

    def text(self) -> Corpus:
        """The training text: ``corpus`` itself, or the shipped corpus or file it names."""
        return self.corpus if isinstance(self.corpus, Corpus) else load_corpus(self.corpus)


@dataclass
class Result:
    """A trained (or stopped) TinyLM: ``trained`` holds the model, its tokenizer and what a checkpoint
    records; ``history`` the losses and evaluations; ``checkpoint`` where it was saved (None until then)."""

    trained: TrainedLM
    history: TrainingHistory
    settings: Settings | None = None  # None for a checkpoint read from disk
    checkpoint: Path | None = None

    @property
    def steps(self) -> int:
        """Optimisation steps taken."""
        return int(self.trained.meta.get("step", 0))

    @property
    def total_steps(self) -> int:
        """Steps the run was set to take."""
        return self.trained.total_steps

    def save(self, name_or_path: str | Path | None = None) -> Path:
        """Write the checkpoint (a bare name goes under $LAYERSCOPE_HOME/checkpoints; None: a name that says
        what was trained, e.g. synthetic-char-1x32-seed2); returns its folder, also kept in ``checkpoint``."""
        self.checkpoint = self.trained.save(name_or_path or self.trained.name)
        return self.checkpoint

    @classmethod
    def load(cls, name_or_path: str | Path) -> Result:
        """A saved checkpoint as a result (its history is the one it recorded)."""
        trained = TrainedLM.load(name_or_path)
        return cls(trained, trained.history, checkpoint=Path(name_or_path))

    def to_json(self) -> dict:
        """The ``python -m core train`` contract (losses in nats per token)."""
        history = self.history
        return {
            "steps": self.steps,
            "tokens_per_s": round(history.tokens_per_s, 1),
            "train_loss": [round(loss, 5) for loss in history.train_loss_nats],
            "val_loss": round(history.evals[-1].val_loss_nats, 5),
            "bigram_val_loss": round(history.bigram_val_loss_nats, 5),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
        }

    def frames(self) -> dict[str, pd.DataFrame]:
        """``loss`` (step, split, loss_nats), ``evaluations`` (one row per evaluation), ``skills`` (step,
        skill, accuracy; empty unless the corpus has the synthetic skills): see ``TrainingHistory``."""
        return frames_of(self.history)


def frames_of(history: TrainingHistory) -> dict[str, pd.DataFrame]:
    """The tables of a history, finished or still growing (the page's live view)."""
    return {"loss": history.loss_frame(), "evaluations": history.evaluations_frame(), "skills": history.skills_frame()}


def trainer_for(settings: Settings) -> Trainer:
    """Read and tokenize the corpus and build the model, ready to train. Bad settings raise UserError here."""
    settings.validate()
    data = tokenize_corpus(settings.text(), settings.tokenizer, settings.bpe_vocab, settings.training.val_fraction)
    return Trainer(data, settings.shape, settings.training)


def result_of(trainer: Trainer, settings: Settings | None) -> Result:
    """The trainer's model and history as they are now (while it does not train)."""
    trained = TrainedLM(trainer.model, trainer.data.tokenizer, trainer.metadata())
    return Result(trained, trained.history, settings)


def run(handle: None, settings: Settings, progress: Progress | None = None) -> Result:
    """Train a new TinyLM for ``settings.training.steps`` steps, reporting each evaluation to ``progress``.

    ``handle`` must be None: nothing is loaded, the model starts from random weights.
    """
    if handle is not None:
        raise TypeError("training starts from scratch: call run(None, settings)")
    trainer = trainer_for(settings)
    trainer.run(progress=progress)
    return result_of(trainer, settings)
