"""Training a TinyLM on one corpus: data split, bigram baseline, AdamW with warm-up + cosine decay.

`Trainer` advances one optimisation step at a time, so the same object serves `run` (to the end:
the CLI and the bench), the page's background thread (stop, resume) and the tests (same seed, same curve).
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import torch
import torch.nn.functional as F

from core.analyses.train.corpora import Corpus
from core.models.tinylm import TinyLM, TinyLMConfig
from core.analyses.train.skills import corpus_has_skills, skill_accuracy
from core.analyses.train.tokenization import DEFAULT_BPE_VOCAB, build_tokenizer, encode
from core.errors import UserError
from core.progress import Progress

SAMPLE_TEXT_CHARS = 2000  # held-out text kept in a checkpoint, for the activations PCA


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Learning rates warm up linearly for `warmup_steps`, then follow a
    cosine down to `min_lr_fraction * learning_rate` at `steps`."""

    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 6e-3
    warmup_steps: int = 30
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    grad_clip_norm: float = 1.0
    eval_every: int = 50
    eval_tokens: int = 16_384
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.steps <= 0:
            raise UserError(f"steps must be a positive integer, got {self.steps}")
        if self.batch_size <= 0:
            raise UserError(f"batch size must be a positive integer, got {self.batch_size}")
        if not 0 < self.learning_rate <= 1:
            raise UserError(f"learning rate must be in (0, 1], got {self.learning_rate}")
        if self.eval_every <= 0:
            raise UserError(f"eval_every must be a positive integer, got {self.eval_every}")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")

    def learning_rate_at(self, step: int) -> float:
        """Learning rate for optimisation step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        floor = self.min_lr_fraction * self.learning_rate
        return floor + (self.learning_rate - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TokenizedCorpus:
    """A corpus split in two by position (the last `val_fraction` held out) and tokenized.
    train_ids, val_ids: int64 [n_tokens]."""

    name: str
    tokenizer_kind: str
    tokenizer: object
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    val_text: str
    tracks_skills: bool


def tokenize_corpus(
    corpus: Corpus, tokenizer_kind: str = "char", bpe_vocab_size: int = DEFAULT_BPE_VOCAB, val_fraction: float = 0.1
) -> TokenizedCorpus:
    """Fit the tokenizer to the whole text, split at a line start near 1 - val_fraction, encode both parts."""
    text = corpus.text
    cut = int(len(text) * (1 - val_fraction))
    line_start = text.find("\n", cut) + 1
    if 0 < line_start < len(text):
        cut = line_start
    tokenizer = build_tokenizer(text, tokenizer_kind, bpe_vocab_size)
    as_tensor = lambda part: torch.tensor(encode(tokenizer, part), dtype=torch.long)  # noqa: E731
    train_text, val_text = text[:cut], text[cut:]
    return TokenizedCorpus(
        corpus.name,
        tokenizer_kind,
        tokenizer,
        as_tensor(train_text),
        as_tensor(val_text),
        val_text,
        corpus_has_skills(text),
    )


def val_windows(val_ids: torch.Tensor, context_length: int, max_tokens: int) -> torch.Tensor:
    """Non-overlapping [n, context_length + 1] windows of the validation ids, evenly spread,
    at most `max_tokens` predictions in all. Inputs are w[:, :-1], targets w[:, 1:]."""
    n_available = (len(val_ids) - 1) // context_length
    if n_available < 1:
        raise UserError(
            f"the validation split has only {len(val_ids)} tokens, fewer than context length + 1 "
            f"({context_length + 1}); use a longer corpus or a shorter context"
        )
    n = max(1, min(n_available, max_tokens // context_length))
    starts = torch.linspace(0, (n_available - 1) * context_length, n).long()
    return torch.stack([val_ids[s : s + context_length + 1] for s in starts.tolist()])


def bigram_loss_nats(train_ids: torch.Tensor, windows: torch.Tensor, vocab_size: int, alpha: float = 0.1) -> float:
    """Validation loss of the bigram model p(next | previous) counted on the training ids,
    with add-`alpha` smoothing, on the same (previous, next) pairs the transformer is scored on."""
    counts = torch.full((vocab_size, vocab_size), alpha, dtype=torch.float64)
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1, dtype=torch.float64), accumulate=True)
    log_probs = counts.log() - counts.sum(dim=1, keepdim=True).log()
    return float(-log_probs[windows[:, :-1].reshape(-1), windows[:, 1:].reshape(-1)].mean())


@dataclass
class EvalPoint:
    """One evaluation during training."""

    step: int
    val_loss_nats: float
    skill_accuracy: dict[str, float]
    train_seconds: float


@dataclass
class TrainingHistory:
    """Everything the loss chart needs. Lists only grow (appends are atomic, so another thread may read)."""

    train_loss_nats: list[float] = field(default_factory=list)  # one per optimisation step
    evals: list[EvalPoint] = field(default_factory=list)
    bigram_val_loss_nats: float = float("nan")
    train_seconds: float = 0.0  # time spent in optimisation steps only (not evaluation)
    train_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"tokens_per_s": self.tokens_per_s}

    def loss_frame(self, smooth_steps: int = 10) -> pd.DataFrame:
        """Columns: step, split ("train" | "validation"), loss_nats. Train loss is a running mean over
        `smooth_steps` steps (single batches are noisy); validation is as measured."""
        train = pd.Series(self.train_loss_nats, dtype=float)
        frames = [
            pd.DataFrame(
                {"step": range(1, len(train) + 1), "split": "train", "loss_nats": train.rolling(smooth_steps, 1).mean()}
            ),
            pd.DataFrame(
                {"step": [e.step for e in self.evals], "split": "validation",
                 "loss_nats": [e.val_loss_nats for e in self.evals]}
            ),
        ]
        return pd.concat(frames, ignore_index=True)

    def evaluations_frame(self) -> pd.DataFrame:
        """One row per evaluation: step, val_loss_nats, val_perplexity, train_seconds, and "skill: <name>"
        (share of probes solved) for each tracked skill."""
        return pd.DataFrame(
            [{"step": e.step, "val_loss_nats": round(e.val_loss_nats, 4),
              "val_perplexity": round(math.exp(e.val_loss_nats), 2), "train_seconds": round(e.train_seconds, 1),
              **{f"skill: {k}": v for k, v in (e.skill_accuracy or {}).items()}} for e in self.evals]
        )

    def skills_frame(self) -> pd.DataFrame:
        """Columns: step, skill, accuracy (share of probes solved), one row per evaluation and skill."""
        rows = [
            {"step": e.step, "skill": skill, "accuracy": acc} for e in self.evals for skill, acc in e.skill_accuracy.items()
        ]
        return pd.DataFrame(rows, columns=["step", "skill", "accuracy"])

    @classmethod
    def from_dict(cls, d: dict) -> TrainingHistory:
        fields = {k: v for k, v in d.items() if k != "tokens_per_s"}
        fields["evals"] = [EvalPoint(**e) for e in d.get("evals", [])]
        return cls(**fields)


class Trainer:
    """Owns the model, optimiser, data and history of one training run."""

    def __init__(self, data: TokenizedCorpus, model_config: TinyLMConfig, config: TrainConfig = TrainConfig()):
        self.data, self.config = data, config
        self.model_config = replace(model_config, vocab_size=len(data.tokenizer))
        context = self.model_config.context_length
        if len(data.train_ids) <= context + 1:
            raise UserError(
                f"the training split has only {len(data.train_ids)} tokens; it needs more than the "
                f"context length ({context}); use a longer corpus or a shorter context"
            )
        self.val_windows = val_windows(data.val_ids, context, config.eval_tokens)
        torch.manual_seed(config.seed)  # weight init and dropout masks
        self.model = TinyLM(self.model_config)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]  # biases, LayerNorm gains
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
            betas=(0.9, 0.99),
        )
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history = TrainingHistory(
            bigram_val_loss_nats=bigram_loss_nats(data.train_ids, self.val_windows, self.model_config.vocab_size)
        )

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def sample_batch(self):
        """Random training windows: inputs and next-token targets, both [batch, context]."""
        context = self.model_config.context_length
        starts = torch.randint(
            len(self.data.train_ids) - context - 1, (self.config.batch_size,), generator=self.batch_generator
        )
        windows = torch.stack([self.data.train_ids[s : s + context + 1] for s in starts.tolist()])
        return windows[:, :-1], windows[:, 1:]

    def train_step(self) -> float:
        """One AdamW step on a fresh batch; returns the batch's loss in nats per token."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate_at(self.step)
        inputs, targets = self.sample_batch()
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def val_loss_nats(self) -> float:
        """Mean next-token loss over the fixed validation windows (dropout off)."""
        self.model.eval()
        total, batch = 0.0, 64
        for chunk in self.val_windows.split(batch):
            logits = self.model(chunk[:, :-1])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum").item()
        return total / self.val_windows[:, 1:].numel()

    def evaluate(self) -> EvalPoint:
        skills = skill_accuracy(self.model, self.data.tokenizer) if self.data.tracks_skills else {}
        point = EvalPoint(self.step, self.val_loss_nats(), skills, self.history.train_seconds)
        self.history.evals.append(point)
        return point

    def run(self, stop: threading.Event | None = None, progress: Progress | None = None) -> TrainingHistory:
        """Train until `config.steps` (or until `stop` is set), evaluating every `eval_every` steps
        and at the end (each evaluation is reported to `progress`). Calling it again after a stop
        resumes where it left off."""
        tokens_per_step = self.config.batch_size * self.model_config.context_length
        if not self.history.evals:
            self._evaluate(progress)  # the untrained model's loss, near ln(vocab_size)
        while not self.finished and not (stop is not None and stop.is_set()):
            started = time.perf_counter()
            loss = self.train_step()
            self.history.train_seconds += time.perf_counter() - started
            self.history.train_tokens += tokens_per_step
            self.history.train_loss_nats.append(loss)
            if self.step % self.config.eval_every == 0 or self.finished:
                self._evaluate(progress)
        if self.history.evals[-1].step != self.step:
            self._evaluate(progress)  # stopped between evaluations: score where we are
        return self.history

    def _evaluate(self, progress: Progress | None) -> None:
        point = self.evaluate()
        if progress:
            progress(self.step / self.config.steps,
                     f"step {self.step}/{self.config.steps}: validation loss {point.val_loss_nats:.3f} nats "
                     f"(bigram {self.history.bigram_val_loss_nats:.3f})")

    @property
    def run_name(self) -> str:
        """A checkpoint name that says what was trained, e.g. shakespeare-char-4x128-seed0."""
        shape = self.model_config
        corpus = re.sub(r"[^A-Za-z0-9._-]+", "_", self.data.name).strip("._-") or "corpus"
        return f"{corpus}-{self.data.tokenizer_kind}-{shape.n_layers}x{shape.d_model}-seed{self.config.seed}"

    def metadata(self) -> dict:
        """What a checkpoint records about this run (see core.analyses.train.checkpoint)."""
        return {
            "name": self.run_name,
            "corpus": self.data.name,
            "tokenizer": self.data.tokenizer_kind,
            "step": self.step,
            "train_config": asdict(self.config),
            "history": self.history.to_dict(),
            "sample_text": self.data.val_text[:SAMPLE_TEXT_CHARS],
        }
