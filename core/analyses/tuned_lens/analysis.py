"""Train a tuned lens for the loaded model (or reuse one), and measure it against the logit lens.

The KL of each lens to the model's final distribution is the mean over every position of every line
of a held-out evaluation text (one sequence per line, BOS as the tokenizer adds it), full vocabulary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.analyses.base import Settings as BaseSettings
from core.errors import UserError, read_text
from core.lenses import LogitLens, default_lens_dir, load_tuned_lens
from core.analyses.tuned_lens.training import TrainingOptions, evaluate, train
from core.lenses.tuned import CONFIG
from core.models.handle import ModelHandle
from core.progress import Progress, part

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

ROOT = Path(__file__).resolve().parents[3]
TRAIN_TEXT = ROOT / "assets" / "quanta" / "corpus.jsonl"  # prose, code, tables, URLs, lists (shipped)
EVAL_TEXT = ROOT / "assets" / "corpora" / "lens_eval.txt"  # held out: written for this, never trained on


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``out``: the lens folder (default: this model's under $LAYERSCOPE_HOME/lenses); a lens already
    there is reused. ``eval_text``: a file, one sequence per line (default: the shipped held-out text)."""

    train_tokens: int = 4096
    steps: int = 80
    seed: int = 0
    out: str | None = None
    eval_text: str | None = None

    def validate(self) -> None:
        if not 256 <= self.train_tokens <= 2_000_000:
            raise UserError(f"--train-tokens must be between 256 and 2,000,000, got {self.train_tokens}")
        if not 0 <= self.steps <= 100_000:
            raise UserError(f"the number of training steps must be between 0 and 100,000, got {self.steps}")
        eval_lines(self)  # an unreadable or empty evaluation text fails before any training


def eval_lines(settings: Settings) -> list[str]:
    path = Path(settings.eval_text).expanduser() if settings.eval_text else EVAL_TEXT
    text = read_text(path, "evaluation text", "give a plain text file, one sequence per line")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"the evaluation text {path} is empty: give at least one line of text")
    return lines


def training_texts() -> list[str]:
    return [json.loads(line)["text"] for line in TRAIN_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Result:
    model: str
    path: str
    train_tokens: int  # tokens the lens was trained on (as its folder records them when reused)
    seconds: float
    reused: bool
    kl_logit_bits: list[float]  # per layer 0..L
    kl_tuned_bits: list[float]

    def to_json(self) -> dict:
        """The ``python -m core tuned-lens`` contract."""
        return {
            **{name: getattr(self, name) for name in ("model", "path", "train_tokens", "seconds")},
            "layers": [{"layer": layer, "kl_logit_bits": round(a, 5), "kl_tuned_bits": round(b, 5)}
                       for layer, (a, b) in enumerate(zip(self.kl_logit_bits, self.kl_tuned_bits))],
        }

    def frames(self) -> dict[str, pd.DataFrame]:
        """``layers``: layer, kl_logit_bits, kl_tuned_bits, ratio (tuned / logit)."""
        frame = pd.DataFrame({"layer": range(len(self.kl_logit_bits)), "kl_logit_bits": self.kl_logit_bits,
                              "kl_tuned_bits": self.kl_tuned_bits})
        frame["ratio"] = frame["kl_tuned_bits"] / frame["kl_logit_bits"].where(frame["kl_logit_bits"] > 0)
        return {"layers": frame}

    def layers_at_most_half(self) -> tuple[int, int]:
        """(layers 1..L-3 where the tuned KL is at most half the logit KL, how many layers that range has)."""
        n = len(self.kl_logit_bits) - 1
        span = range(1, max(1, n - 2))
        return sum(self.kl_tuned_bits[l] <= 0.5 * self.kl_logit_bits[l] for l in span), len(span)


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    started = time.perf_counter()
    folder = Path(settings.out).expanduser() if settings.out else default_lens_dir(handle)
    reused = (folder / CONFIG).is_file()
    if reused:
        lens = load_tuned_lens(folder, handle)
        train_tokens = int(lens.config.get("layerscope", {}).get("train_tokens", 0))
    else:
        options = TrainingOptions(train_tokens=settings.train_tokens, steps=settings.steps, seed=settings.seed)
        lens, info = train(handle, training_texts(), options, part(progress, 0.0, 0.8))
        lens.config["layerscope"] = info  # tuned-lens ignores keys it does not know
        lens.save(folder)
        train_tokens = info["train_tokens"]
    kl = evaluate(handle, eval_lines(settings), {"logit": LogitLens(), "tuned": lens},
                  part(progress, 0.0 if reused else 0.8, 1.0))
    return Result(handle.spec, str(folder), train_tokens, round(time.perf_counter() - started, 1), reused,
                  kl["logit"], kl["tuned"])
