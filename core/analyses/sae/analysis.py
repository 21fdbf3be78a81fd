"""Train a sparse dictionary (TopK/BatchTopK SAE or transcoder) on any loaded model, here, and judge it.

Activations stream from the shipped corpora (``corpus``): windows go through the model a batch at a time and
each pass stops after the dictionary's layer (``handle.record``); BOS and padding are dropped; the trainer
(``core.features.training``) gathers them into shuffled buffers, never the whole stream at once. The dictionary
is written in Gemma Scope 2's layout (atomically) and scored on held-out text of other kinds (``evaluate``):
FVU, L0, dead latents, ΔCE and loss recovered. The Features page's cards (top tokens, contexts, density) are
computed for it at the end, so the page opens it at once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from core.analyses.base import Settings as BaseSettings
from core.analyses.features.wiring import Wiring, excluded, kept, model_site, read
from core.analyses.sae import corpus
from core.analyses.sae.evaluate import Scores, score
from core.analyses.sae.weighting import Weighting, fisher_weighting, identity
from core.errors import UserError
from core.features import TrainConfig, load_dictionary, save_dictionary, train_dictionary
from core.models.gguf_cache import cache_home
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet

SITES = ("resid", "mlp_out", "transcoder")
ACTIVATIONS = ("topk", "batchtopk")
WEIGHTINGS = ("fisher", "none")
CALIBRATION_WINDOWS = 16
TRAIN_TEXT_KEYS = ("eval_tokens", "fvu", "delta_ce_nats", "loss_recovered")
MAX_TOKENS = 20_000_000


def model_slug(handle: ModelHandle) -> str:
    """The folder name of a model's dictionaries under $LAYERSCOPE_HOME/dictionaries."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(handle.spec.rstrip("/")).name or handle.spec)[:60]


def dictionaries_home(handle: ModelHandle) -> Path:
    """Where dictionaries trained here for this model live (the Features page lists them)."""
    return cache_home() / "dictionaries" / model_slug(handle)


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``site``: resid (the residual after block ``layer``; 0 = embeddings), mlp_out (block ``layer``'s MLP output)
    or transcoder (block ``layer``'s MLP input -> its output), layers counted as the lens counts them.
    ``tokens``: distinct training tokens (BOS excluded), each seen ``epochs`` times. ``out``: the folder
    (default: under $LAYERSCOPE_HOME/dictionaries/<model>/). ``eval_text``: held-out files, one sequence a line."""

    site: str = "resid"
    layer: int = 9
    width: int = 4096
    k: int = 32
    tokens: int = 400_000
    activation: str = "topk"
    epochs: int = 8
    seq_len: int = 128
    batch_size: int = 1024
    out: str | None = None
    overwrite: bool = False
    eval_text: tuple[str, ...] = ()
    weighting: str = "fisher"  # "fisher": errors weighted by the loss's sensitivity too (``weighting``); "none": MSE
    fisher_weight: float = 8.0  # λ of ``weighting`` (8 with 400k tokens meets the layer-9 goals: README)
    seed: int = 0
    cards: bool = True  # the Features page's top tokens, contexts and density, computed now

    def validate(self) -> None:
        if self.site not in SITES:
            raise UserError(f"unknown site '{self.site}': choose one of {', '.join(SITES)}")
        for name, low, high in (("width", 16, 1 << 20), ("tokens", 1000, MAX_TOKENS), ("epochs", 1, 64),
                                ("seq_len", 16, 4096), ("batch_size", 16, 65536)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise UserError(f"--{name.replace('_', '-')} must be a whole number from {low:,} to {high:,}, got {value!r}")
        if not isinstance(self.k, int) or not 1 <= self.k <= self.width:
            raise UserError(f"--k must be between 1 and the width {self.width}, got {self.k!r}")
        if isinstance(self.fisher_weight, bool) or not isinstance(self.fisher_weight, (int, float)) \
                or not 0 <= self.fisher_weight <= 1e6:
            raise UserError(f"--fisher-weight must be a number from 0 to 1,000,000, got {self.fisher_weight!r}")
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"unknown weighting '{self.weighting}': choose {' or '.join(WEIGHTINGS)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"unknown activation '{self.activation}': choose topk or batchtopk")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise UserError(f"--layer must be a layer number (0 = embeddings for resid), got {self.layer!r}")
        corpus.eval_lines(self.eval_text)  # an unreadable or empty held-out text fails before any training

    def folder(self, handle: ModelHandle) -> Path:
        if self.out:
            return Path(self.out).expanduser()
        name = f"{self.site}-L{self.layer}-w{self.width}-k{self.k}-{self.activation}-t{self.tokens // 1000}k-s{self.seed}"
        return dictionaries_home(handle) / name


@dataclass
class Result:
    model: str
    path: str
    settings: Settings
    scores: Scores
    dead_fraction: float  # latents that did not fire in the trainer's last window of tokens
    train_scores: Scores  # on held-out windows of the training text
    train_tokens: int  # distinct tokens trained on (held-out ones excluded)
    seconds: float
    seconds_activations: float  # of which: the model's passes
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``python -m core sae`` contract."""
        s = self.settings
        return {"model": self.model, "path": self.path, "site": s.site, "layer": s.layer, "width": s.width, "k": s.k,
                "activation": s.activation, "tokens": self.train_tokens, "epochs": s.epochs,
                **self.scores.to_json(), "dead_fraction": round(self.dead_fraction, 5),
                "train_text": {k: v for k, v in self.train_scores.to_json().items() if k in TRAIN_TEXT_KEYS},
                "seconds": round(self.seconds, 1),
                "seconds_activations": round(self.seconds_activations, 1)}

    def frames(self):
        """``training``: step, tokens, fvu, auxk, dead_fraction, lr (every few steps)."""
        import pandas as pd

        return {"training": pd.DataFrame(self.history)}


def wiring_of(handle: ModelHandle, settings: Settings) -> Wiring:
    if settings.site == "transcoder":
        return Wiring(model_site("mlp_in", settings.layer, handle.n_layers),
                      model_site("mlp_out", settings.layer, handle.n_layers))
    site = model_site(settings.site, settings.layer, handle.n_layers)
    return Wiring(site, site)


class _Timer:
    seconds = 0.0


def stream(handle: ModelHandle, wiring: Wiring, rows: list[list[int]], transcoder: bool, timer: _Timer,
           weighting: Weighting, batch_rows: int = 16) -> Iterator:
    """Activation batches [n, d_model] (transcoders: (mlp_in, mlp_out) pairs), BOS and padding dropped, the output
    weighted (``weighting``; an SAE's input is its output)."""
    for chunk in corpus.batches(rows, batch_rows):
        started = time.perf_counter()
        batch = handle.batch_of(chunk, pad="right")
        values = read(handle, batch, [wiring])
        skip = excluded(handle, batch)
        x, y = kept(values[wiring.read], skip), weighting.apply(kept(values[wiring.write], skip))
        timer.seconds += time.perf_counter() - started
        yield (x, y) if transcoder else y


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    handle.require("record", "training a dictionary")
    progress = progress or quiet
    started = time.perf_counter()
    wiring = wiring_of(handle, settings)
    folder = settings.folder(handle)
    if (folder / "params.safetensors").exists() and not settings.overwrite:
        raise UserError(f"{folder} already holds a dictionary: pass --overwrite to replace it, or choose another --out")
    eval_rows = [handle.tokenizer(line, add_special_tokens=True)["input_ids"][: settings.seq_len]
                 for line in corpus.eval_lines(settings.eval_text)]
    progress(0.0, "cutting the training text into windows")
    held_tokens = min(4096, max(1024, settings.tokens // 20))  # never trained on: scored as train_text
    rows = corpus.training_windows(handle, settings.tokens + held_tokens, settings.seq_len, settings.seed)
    transcoder = settings.site == "transcoder"
    config = TrainConfig(width=settings.width, k=settings.k, activation=settings.activation,
                         kind="transcoder" if transcoder else "sae", batch_size=settings.batch_size,
                         epochs=settings.epochs, held_out_tokens=held_tokens, seed=settings.seed,
                         total_tokens=settings.tokens + held_tokens,
                         buffer_tokens=max(65536, settings.batch_size))
    timer = _Timer()
    torch.manual_seed(settings.seed)
    weighting = identity(handle.d_model)
    if settings.weighting == "fisher":
        calibration = rows[-CALIBRATION_WINDOWS:]  # trained on too: these only measure which directions matter
        weighting = fisher_weighting(handle, wiring, calibration, settings.fisher_weight, part(progress, 0.0, 0.05))
    trained = train_dictionary(stream(handle, wiring, rows, transcoder, timer, weighting), config,
                               site="mlp_in" if transcoder else settings.site, layer=settings.layer,
                               model=handle.spec, d_model=handle.d_model, progress=part(progress, 0.05, 0.8))
    dictionary = weighting.fold(trained.dictionary, transcoder)
    train_scores = score(handle, dictionary, wiring, rows[: held_tokens // settings.seq_len],
                         progress=part(progress, 0.8, 0.85))
    scores = score(handle, dictionary, wiring, eval_rows, progress=part(progress, 0.85, 0.93))
    dictionary.info = {**dictionary.info, **scores.to_json(), "dead_fraction": trained.dead_fraction,
                       "train_text": train_scores.to_json(), "weighting": settings.weighting,
                       "fingerprint": handle.fingerprint(), "corpora": sorted(corpus.training_texts()),
                       "epochs": settings.epochs}
    save_dictionary(dictionary, folder, "gemmascope", overwrite=settings.overwrite)
    if settings.cards:
        from core.analyses.features import cards

        saved = load_dictionary(folder)
        cards.top_tokens(handle, saved, folder, progress=part(progress, 0.93, 0.96))
        cards.contexts(handle, saved, folder, progress=part(progress, 0.96, 1.0))
    progress(1.0, f"done: ΔCE {scores.delta_ce_nats:.3f} nats, FVU {scores.fvu:.3f}")
    return Result(handle.spec, str(folder), settings, scores, trained.dead_fraction, train_scores,
                  trained.tokens // settings.epochs, time.perf_counter() - started, timer.seconds, trained.history)
