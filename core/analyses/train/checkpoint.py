"""A trained TinyLM with its training record (``TrainedLM``); the checkpoint format is ``core.models.tinylm_checkpoint``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from core.models.tinylm import TinyLM
from core.models.tinylm_checkpoint import (  # noqa: F401 (the train analysis's checkpoints, re-exported)
    checkpoint_path, checkpoints_dir, list_checkpoints, load_checkpoint, save_checkpoint,
)
from core.analyses.train.trainer import TrainingHistory
from core.models.handle import ModelHandle


@dataclass
class TrainedLM:
    """A model ready to explore, with what a checkpoint records about how it was trained."""

    model: TinyLM
    tokenizer: PreTrainedTokenizerFast
    meta: dict  # tinylm.json without "format": name, corpus, tokenizer, step, train_config, history, sample_text

    @property
    def name(self) -> str:
        return self.meta.get("name", "tinylm")

    @property
    def history(self) -> TrainingHistory:
        return TrainingHistory.from_dict(self.meta.get("history", {}))

    @property
    def total_steps(self) -> int:
        return self.meta.get("train_config", {}).get("steps", self.meta.get("step", 0))

    @cached_property
    def handle(self) -> ModelHandle:
        """The model behind the interface every analysis reads (hooks, residuals, attention patterns)."""
        from core.models.loading import wrap_model

        return wrap_model(self.model, self.tokenizer, self.name)

    def save(self, name_or_path) -> Path:
        return save_checkpoint(name_or_path, self.model, self.tokenizer, self.meta)

    @classmethod
    def load(cls, name_or_path) -> TrainedLM:
        model, tokenizer, meta = load_checkpoint(name_or_path)
        return cls(model, tokenizer, meta)
