"""The quanta pipeline: losses -> low-loss tokens -> sketched gradients -> spectral clusters.

Michaud et al. ("The Quantization Model of Neural Scaling", 2023) take tokens a model predicts
with low loss, compare the gradients those predictions induce, and cluster them: tokens whose
gradients point the same way rely on the same piece of the network, a candidate "quantum" of
skill. Every expensive step is cached on disk (losses per document, gradients per token), so a
run resumes where it stopped and re-clustering with other settings takes seconds.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from core.analyses.base import Settings as BaseSettings
from core.analyses.quanta.clustering import cluster_order, cosine_similarity, rank_frequency_slope, spectral_clusters
from core.analyses.quanta.corpus import DEFAULT_CORPUS, Corpus, TokenIndex, build_index, load_corpus
from core.analyses.quanta.gradients import GradientStore
from core.analyses.quanta.losses import LossStore, countdown
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, part
from core.tokens import token_str

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

LN2 = math.log(2.0)
UNITS = ("nats", "bits")
INDUCTION_FILTERS = {"trigram": 3, "bigram": 2, "none": None}
POOL_FACTOR = 2  # automatic document count: score until twice the token cap pass the filters
FIRST_STEP = 4  # documents scored before the first estimate of how many are needed
DOCUMENT_ORDER_SEED = 0  # documents are scored in one fixed shuffled order, whatever the seed
CONTEXT_TOKENS = 48  # tokens of context shown before an answer
AFTER_TOKENS = 12  # tokens shown (greyed) after it


@dataclass(frozen=True)
class Settings(BaseSettings):
    """Which tokens to cluster (corpus, cut, loss threshold, filters, cap) and how (parameters, sketch, clusters)."""

    corpus: str | Corpus = DEFAULT_CORPUS  # shipped corpus name, a .txt / .jsonl path, or the documents (an upload)
    max_length: int = 64  # tokens per document (BOS included); documents are cut there
    tokens: int = 300  # cap on the number of low-loss tokens sampled
    loss_threshold: float = 0.5
    unit: str = "nats"  # unit of loss_threshold
    induction: str = "trigram"  # drop tokens completing an n-gram seen earlier in the document
    documents: int | None = None  # documents scored; None = until POOL_FACTOR x tokens pass the filters
    params: str = "all"  # "all" (every non-embedding, non-norm parameter), "mlp" or "attention"
    proj_dim: int = 2048
    n_clusters: int = 20
    seed: int = 0  # token sampling and clustering

    def validate(self) -> None:
        if self.unit not in UNITS:
            raise UserError(f"unknown unit '{self.unit}': use nats or bits")
        if self.induction not in INDUCTION_FILTERS:
            raise UserError(f"unknown induction filter '{self.induction}': use {', '.join(INDUCTION_FILTERS)}")
        if not self.loss_threshold > 0:
            raise UserError("the loss threshold must be positive")
        if self.tokens < 2:
            raise UserError("sample at least 2 tokens")
        if self.max_length < 2:
            raise UserError("documents must keep at least 2 tokens (--max-length)")
        if self.documents is not None and self.documents < 1:
            raise UserError("score at least one document")

    @property
    def threshold_nats(self) -> float:
        return self.loss_threshold * LN2 if self.unit == "bits" else self.loss_threshold

    def documents_to_read(self) -> Corpus:
        """The corpus itself: ``corpus`` when it holds the documents, else the shipped corpus or file it names."""
        return self.corpus if isinstance(self.corpus, Corpus) else load_corpus(self.corpus)


@dataclass
class Cluster:
    id: int  # 0 = largest
    size: int
    members: np.ndarray  # rows of Result.tokens, most typical first
    top_answers: list[tuple[str, int]]  # most common answer tokens with counts
    mean_loss_nats: float
    kinds: list[tuple[str, int]]  # document kinds of its members, most common first


@dataclass
class Result:
    """A clustering of low-loss tokens by their gradients.

    ``tokens`` has one row per sampled token, in canonical order, with columns: token (index in
    the corpus's canonical index), document, position, kind, answer, context (text before the
    answer), after (text following it), loss_nats, loss_bits, cluster. ``similarity[i, j]`` is the
    cosine of the sketched gradients of rows i and j.
    """

    model: str
    settings: Settings
    corpus_name: str
    n_documents: int
    n_documents_scored: int
    n_scored: int  # predictable tokens in the scored documents
    n_below_threshold: int
    n_after_induction: int
    n_params: int  # parameters whose gradient is sketched
    losses_nats: np.ndarray  # [n_scored] every scored token's loss (for the histogram)
    tokens: pd.DataFrame
    similarity: np.ndarray
    clusters: list[Cluster]
    rank_frequency_slope: float
    order: np.ndarray  # rows ordered by cluster (heatmap)
    gradients_computed: int
    gradients_cached: int
    timings: dict = field(default_factory=dict)  # seconds per step
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def labels(self) -> np.ndarray:
        return self.tokens["cluster"].to_numpy()

    def examples(self, cluster: Cluster, n: int = 5) -> pd.DataFrame:
        return self.tokens.iloc[cluster.members[:n]]

    def to_json(self, examples: int = 5, context_chars: int = 80) -> dict:
        """The CLI contract."""
        slope = self.rank_frequency_slope
        return {
            "model": self.model,
            "n_tokens": self.n_tokens,
            "n_clusters": len(self.clusters),
            "clusters": [
                {
                    "id": c.id,
                    "size": c.size,
                    "top_answers": [answer for answer, _ in c.top_answers],
                    "examples": [
                        {"context": row.context[-context_chars:], "answer": row.answer}
                        for row in self.examples(c, examples).itertuples()
                    ],
                }
                for c in self.clusters
            ],
            "rank_frequency_slope": None if math.isnan(slope) else round(slope, 4),
        }

    def cluster_table(self) -> pd.DataFrame:
        """One row per cluster: cluster, size, top_answers, mean_loss_nats, kinds."""
        return pd.DataFrame(
            [
                {
                    "cluster": c.id,
                    "size": c.size,
                    "top_answers": " · ".join(f"{visible_answer(a)} ({n})" for a, n in c.top_answers),
                    "mean_loss_nats": round(c.mean_loss_nats, 4),
                    "kinds": ", ".join(f"{k} ({n})" for k, n in c.kinds),
                }
                for c in self.clusters
            ]
        )

    def frames(self) -> dict[str, pd.DataFrame]:
        """``tokens`` (one row per sampled token, see the class), ``clusters`` (``cluster_table``),
        ``losses`` (loss_nats, loss_bits of every scored token: the histogram's data), ``similarity``
        (``heatmap_frame``)."""
        losses = pd.DataFrame({"loss_nats": self.losses_nats.astype(float), "loss_bits": self.losses_nats / LN2})
        return {"tokens": self.tokens, "clusters": self.cluster_table(), "losses": losses,
                "similarity": self.heatmap_frame()}

    def heatmap_frame(self, max_side: int = 120) -> pd.DataFrame:
        """Similarity ordered by cluster, averaged over blocks so the side is at most ``max_side``.

        Columns: row, col (ordered block indices), similarity, row_cluster, col_cluster.
        """
        order = self.order
        labels = self.labels[order]
        sim = self.similarity[np.ix_(order, order)]
        blocks = np.array_split(np.arange(len(order)), min(max_side, len(order)))
        rows = []
        for i, bi in enumerate(blocks):
            for j, bj in enumerate(blocks):
                rows.append((i, j, float(sim[np.ix_(bi, bj)].mean()), int(labels[bi[0]]), int(labels[bj[0]])))
        return pd.DataFrame(rows, columns=["row", "col", "similarity", "row_cluster", "col_cluster"])


def visible_answer(text: str) -> str:
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


# -- steps --------------------------------------------------------------------------------------


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)


def token_text(tokenizer, ids: np.ndarray, position: int) -> tuple[str, str, str]:
    """(context, answer, after) as text, so that context + answer + after reads as the document does."""
    start = max(0, position - CONTEXT_TOKENS)
    context = _decode(tokenizer, ids[start:position])
    with_answer = _decode(tokenizer, ids[start : position + 1])
    answer = with_answer[len(context) :] if with_answer.startswith(context) else ""
    if not answer:  # a byte token that is not text on its own, or a decode that rewrote the context
        answer = token_str(tokenizer, int(ids[position]))
    full = _decode(tokenizer, ids[start : position + 1 + AFTER_TOKENS])
    after = full[len(with_answer) :] if full.startswith(with_answer) else _decode(tokenizer, ids[position + 1 : position + 1 + AFTER_TOKENS])
    return context, answer, after


def _candidates(losses: np.ndarray, threshold: float, induction: np.ndarray | None) -> np.ndarray:
    """Tokens (of one span of the index) whose loss is below the threshold and that the induction filter keeps."""
    keep = np.nan_to_num(losses, nan=np.inf) < threshold
    if induction is not None:
        keep &= ~induction
    return keep


def _score_documents(
    store: LossStore, index: TokenIndex, settings: Settings, induction: np.ndarray | None,
    counted: Callable[[int, int, str], None],
) -> np.ndarray:
    """Score documents in the fixed order; -> the documents used (a prefix of that order)."""
    order = np.random.default_rng(DOCUMENT_ORDER_SEED).permutation(len(index.ids))
    if settings.documents is not None:
        used = order[: settings.documents]
        store.score(used.tolist(), counted)
        return used
    target = POOL_FACTOR * settings.tokens
    per_doc = np.zeros(len(order), dtype=np.int64)
    scored = 0  # documents of the order scored so far (a prefix)
    while True:
        losses = store.array()
        while scored < len(order) and int(order[scored]) in store.losses:
            span = index.of_document(int(order[scored]))
            keep = _candidates(losses[span], settings.threshold_nats, None if induction is None else induction[span])
            per_doc[scored] = keep.sum()
            scored += 1
        pool = np.cumsum(per_doc[:scored])
        if scored and pool[-1] >= target:
            return order[: int(np.searchsorted(pool, target)) + 1]
        if scored == len(order):
            return order
        if scored:  # candidates per document so far -> how many more documents we expect to need
            rate = max(pool[-1] / scored, 0.5)
            estimate = min(len(order), scored + int(math.ceil((target - pool[-1]) / rate * 1.2)))
            step = int(min(max(estimate - scored, 4), 256))
        else:
            estimate = step = min(len(order), FIRST_STEP)
        store.score(order[scored : scored + step].tolist(), counted, done=scored, total=max(estimate, scored + step))


def _clusters(tokens: pd.DataFrame, labels: np.ndarray, similarity: np.ndarray) -> list[Cluster]:
    clusters = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        members = np.flatnonzero(labels == c)
        typical = similarity[np.ix_(members, members)].mean(axis=1)
        members = members[np.argsort(-typical, kind="stable")]
        rows = tokens.iloc[members]
        clusters.append(
            Cluster(
                id=c,
                size=len(members),
                members=members,
                top_answers=Counter(rows["answer"]).most_common(5),
                mean_loss_nats=float(rows["loss_nats"].mean()),
                kinds=Counter(rows["kind"]).most_common(),
            )
        )
    return clusters


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    """Find low-loss tokens, sketch their gradients and cluster them (everything cached on disk)."""
    settings.validate()
    timings: dict[str, float] = {}
    started = time.monotonic()
    corpus = settings.documents_to_read()
    index = build_index(corpus, handle.tokenizer, settings.max_length)
    n = INDUCTION_FILTERS[settings.induction]
    induction = index.induction_mask(n) if n else None
    timings["index"] = time.monotonic() - started

    notes = []
    mark = time.monotonic()
    store = LossStore(handle, index)
    if store.corrupt:
        notes.append("the loss cache could not be read and was rebuilt")
    used = _score_documents(store, index, settings, induction, countdown(part(progress, 0.0, 0.3), "per-token losses"))
    timings["losses"] = time.monotonic() - mark

    losses = store.array()
    in_used = np.zeros(len(index), dtype=bool)
    for doc in used:
        in_used[index.of_document(int(doc))] = True
    scored = in_used & ~np.isnan(losses)
    below = scored & _candidates(losses, settings.threshold_nats, None)
    pool = np.flatnonzero(below & _candidates(losses, settings.threshold_nats, induction))
    if len(pool) < 2:
        raise UserError(
            f"only {len(pool)} token(s) of {int(scored.sum())} scored have a loss below {settings.loss_threshold} "
            f"{settings.unit} after the induction filter: raise the threshold or score more documents"
        )
    rng = np.random.default_rng(settings.seed)
    selected = np.sort(rng.choice(pool, size=min(settings.tokens, len(pool)), replace=False))
    if settings.n_clusters >= len(selected):
        raise UserError(
            f"only {len(selected)} tokens passed the filters, not enough for {settings.n_clusters} clusters: ask for "
            "fewer clusters, raise the loss threshold or score more documents"
        )

    mark = time.monotonic()
    gradients = GradientStore(handle, index, settings.params, settings.proj_dim)
    if gradients.corrupt_chunks:
        notes.append(f"{gradients.corrupt_chunks} corrupt gradient cache file(s) were dropped and recomputed")
    stage = part(progress, 0.3, 0.95)
    cached = len(selected) - len(gradients.missing(selected))
    if cached:
        stage(0.0, f"per-token gradients: {cached} of {len(selected)} token gradients found in the cache")
    computed = gradients.compute(selected, countdown(stage, "per-token gradients"))
    timings["gradients"] = time.monotonic() - mark

    mark = time.monotonic()
    if progress:
        progress(0.96, f"spectral clustering of {len(selected)} tokens into {settings.n_clusters} clusters")
    similarity = cosine_similarity(gradients.matrix(selected))
    labels = spectral_clusters(similarity, settings.n_clusters, settings.seed)
    texts = [token_text(handle.tokenizer, index.ids[index.document[i]], int(index.position[i])) for i in selected]
    tokens = pd.DataFrame(
        {
            "token": selected,
            "document": index.document[selected],
            "position": index.position[selected],
            "kind": [corpus.kinds[d] for d in index.document[selected]],
            "answer": [t[1] for t in texts],
            "context": [t[0] for t in texts],
            "after": [t[2] for t in texts],
            "loss_nats": losses[selected].astype(float),
            "loss_bits": losses[selected].astype(float) / LN2,
            "cluster": labels,
        }
    )
    clusters = _clusters(tokens, labels, similarity)
    timings["clustering"] = time.monotonic() - mark
    timings["total"] = time.monotonic() - started
    if progress:
        progress(1.0, f"{len(clusters)} clusters of {len(selected)} tokens")
    return Result(
        model=handle.spec,
        settings=settings,
        corpus_name=corpus.name,
        n_documents=len(corpus),
        n_documents_scored=len(used),
        n_scored=int(scored.sum()),
        n_below_threshold=int(below.sum()),
        n_after_induction=len(pool),
        n_params=gradients.sketcher.n_params,
        losses_nats=losses[scored],
        tokens=tokens,
        similarity=similarity,
        clusters=clusters,
        rank_frequency_slope=rank_frequency_slope([c.size for c in clusters]),
        order=cluster_order(labels, similarity),
        gradients_computed=computed,
        gradients_cached=len(selected) - computed,
        timings={k: round(v, 3) for k, v in timings.items()},
        notes=notes,
    )
