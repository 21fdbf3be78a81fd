"""Per-token losses of whole documents: batched forward passes, cached on disk per document.

Documents are right-padded into batches of at most ``TOKENS_PER_BATCH`` tokens; causal
attention means padding after a document cannot change its losses, so no mask is needed.
Only the residual after the last block is kept and decoded through the model's own final
norm and unembedding (``handle.decode``), a few hundred positions at a time.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from core.analyses.quanta.cache import digest, load_npz, model_fingerprint, quanta_home, save_npz
from core.analyses.quanta.corpus import TokenIndex
from core.models.handle import Batch, ModelHandle
from core.models.sites import Site
from core.progress import Progress

TOKENS_PER_BATCH = 2048
ROWS_PER_DECODE = 256  # positions decoded at once: 256 x 262k vocab x 4 B = 268 MB for Gemma 3
SAVE_EVERY_S = 10.0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def countdown(progress: Progress, label: str) -> Callable[[int, int, str], None]:
    """``counted(done, total, unit)`` reports ``progress(done / total, "label: done/total unit · about 2 min left")``
    (the elapsed time once done): a step measured in documents or tokens, with its time estimate."""
    started = time.monotonic()

    def counted(done: int, total: int, unit: str) -> None:
        elapsed = time.monotonic() - started
        message = f"{label}: {done}/{total} {unit}"
        if 0 < done < total:
            message += f" · about {_duration(elapsed / done * (total - done))} left"
        elif done >= total:
            message += f" · {_duration(elapsed)}"
        progress(min(done / total, 1.0) if total else 1.0, message)

    return counted


def last_residual(handle: ModelHandle, batch: Batch) -> torch.Tensor:
    """The residual stream after the last block, [batch, pos, d_model], from one forward pass (no grad)."""
    site = Site("resid_post", handle.n_layers - 1)
    return handle.record(batch, [site])[site]


def document_losses(handle: ModelHandle, documents: list[np.ndarray]) -> list[np.ndarray]:
    """Loss in nats of every token after the first, per document (one batched forward pass)."""
    batch = handle.batch_of([d.tolist() for d in documents], pad="right")
    residual = last_residual(handle, batch)
    rows = torch.cat([residual[i, : len(d) - 1] for i, d in enumerate(documents)])
    targets = torch.cat([torch.as_tensor(d[1:]) for d in documents]).to(rows.device)
    losses = []
    for start in range(0, len(rows), ROWS_PER_DECODE):
        logits = handle.decode(rows[start : start + ROWS_PER_DECODE])
        target = targets[start : start + ROWS_PER_DECODE]
        losses.append(torch.logsumexp(logits, -1) - logits.gather(-1, target[:, None]).squeeze(-1))
    flat = torch.cat(losses).cpu().numpy().astype(np.float32)
    return np.split(flat, np.cumsum([len(d) - 1 for d in documents])[:-1])


class LossStore:
    """Losses of the documents scored so far for one (model, corpus, max length), kept on disk."""

    def __init__(self, handle: ModelHandle, index: TokenIndex):
        self.handle, self.index = handle, index
        self.key = digest("losses", model_fingerprint(handle), index.corpus.fingerprint, index.max_length)
        self.path = quanta_home() / "losses" / f"{self.key}.npz"
        self.losses: dict[int, np.ndarray] = {}
        existed = self.path.is_file()
        saved = load_npz(self.path, self.key, ("docs", "offsets", "values"))
        self.corrupt = existed and saved is None  # unreadable: it was deleted and is rebuilt
        if saved is None:
            return
        for i, doc in enumerate(saved["docs"].tolist()):
            values = saved["values"][saved["offsets"][i] : saved["offsets"][i + 1]]
            if len(values) == index.offsets[doc + 1] - index.offsets[doc]:
                self.losses[doc] = values

    def save(self) -> None:
        docs = sorted(self.losses)
        offsets = np.concatenate([[0], np.cumsum([len(self.losses[d]) for d in docs])]).astype(np.int64)
        values = np.concatenate([self.losses[d] for d in docs]) if docs else np.zeros(0, np.float32)
        save_npz(self.path, self.key, docs=np.asarray(docs, np.int64), offsets=offsets, values=values)

    def missing(self, docs) -> list[int]:
        return [d for d in docs if d not in self.losses]

    def score(self, docs: list[int], counted: Callable[[int, int, str], None] | None = None, done: int = 0,
              total: int | None = None) -> None:
        """Score the documents not scored yet (saving every few seconds and on the way out)."""
        todo = sorted(self.missing(docs), key=lambda d: -len(self.index.ids[d]))
        total = total or len(todo)
        last_save, dirty = time.monotonic(), False
        try:
            while todo:
                width = len(self.index.ids[todo[0]])
                size = max(1, TOKENS_PER_BATCH // max(width, 1))
                chunk, todo = todo[:size], todo[size:]
                scored = [d for d in chunk if len(self.index.ids[d]) >= 2]
                if scored:
                    for doc, values in zip(scored, document_losses(self.handle, [self.index.ids[d] for d in scored])):
                        self.losses[doc] = values
                for doc in chunk:
                    self.losses.setdefault(doc, np.zeros(0, np.float32))
                dirty = True
                done += len(chunk)
                if counted:
                    counted(done, total, "documents scored")
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    self.save()
                    last_save, dirty = time.monotonic(), False
        finally:
            if dirty:
                self.save()

    def array(self) -> np.ndarray:
        """Loss in nats of every predictable token of the index; NaN where its document is not scored."""
        out = np.full(len(self.index), np.nan, dtype=np.float32)
        for doc, values in self.losses.items():
            out[self.index.of_document(doc)] = values
        return out
