"""Exports of a quanta result: one self-contained HTML file of every cluster, the page's samples, CSV tables.

The markup lives in ``templates/`` (Jinja, escaped automatically); this module only says what goes in.
The HTML file needs no server and no network. Every cluster is a ``<section id="cluster-N">`` with
previous/next links to its neighbours (so it navigates with plain links, even with scripts off);
CSS shows the targeted section only (the first one when none is). A small inline script adds the
cluster dropdown and the left/right arrow keys.
"""

from __future__ import annotations

import functools
import math

import jinja2

from core.analyses.quanta.analysis import Cluster, Result, visible_answer


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("core.analyses.quanta", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _samples(result: Result, cluster: Cluster, n: int) -> list[dict]:
    """What one token in context shows: the text before it, the predicted token (blank ones made visible), what follows."""
    return [
        {"context": row.context, "after": row.after,
         "shown": visible_answer(row.answer) if not row.answer.strip() else row.answer.replace("\n", "⏎\n")}
        for row in result.examples(cluster, n).itertuples()
    ]


def samples_html(result: Result, cluster: Cluster, n: int = 30) -> str:
    """The page's view of one cluster: its first ``n`` tokens in context, with their style."""
    return _templates().get_template("samples.html").render(samples=_samples(result, cluster, n))


def cluster_title(result: Result, cluster_id: int) -> str:
    c = result.clusters[cluster_id]
    answers = ", ".join(visible_answer(a) for a, _ in c.top_answers[:3])
    return f"Cluster {c.id} · {c.size} tokens · {answers}"


def export_html(result: Result, samples_per_cluster: int = 40) -> str:
    """The whole result as one HTML page that opens anywhere and navigates between clusters."""
    s, n = result.settings, len(result.clusters)
    clusters = [
        {"id": c.id, "size": c.size, "title": cluster_title(result, c.id), "mean_loss": f"{c.mean_loss_nats:.3f}",
         "previous": (c.id - 1) % n, "next": (c.id + 1) % n, "kinds": c.kinds,
         "answers": [(visible_answer(a), k) for a, k in c.top_answers],
         "samples": _samples(result, c, samples_per_cluster)}
        for c in result.clusters
    ]
    slope = "n/a" if math.isnan(result.rank_frequency_slope) else f"{result.rank_frequency_slope:.2f}"
    return _templates().get_template("report.html").render(
        model=result.model, n_tokens=result.n_tokens, threshold=f"{s.loss_threshold:g}", unit=s.unit,
        n_documents_scored=result.n_documents_scored, corpus=result.corpus_name, max_length=s.max_length,
        n_params=f"{result.n_params:,}", params=s.params, proj_dim=s.proj_dim, seed=s.seed, slope=slope,
        clusters=clusters,
    )


def tokens_csv(result: Result) -> str:
    """One row per sampled token (columns of ``Result.tokens``)."""
    return result.tokens.to_csv(index=False)
