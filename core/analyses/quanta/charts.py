"""Altair charts of the Quanta page: loss histogram, rank-frequency plot, similarity heatmap."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

LN2 = math.log(2.0)


def loss_histogram_frame(losses_nats: np.ndarray, unit: str = "nats", bins: int = 60) -> pd.DataFrame:
    """Counts of per-token losses in ``unit``; columns: start, end, count (the last bin holds everything above)."""
    values = np.asarray(losses_nats, dtype=float) / (LN2 if unit == "bits" else 1.0)
    values = values[np.isfinite(values)]
    top = float(np.quantile(values, 0.99)) if len(values) else 1.0
    edges = np.linspace(0.0, max(top, 1e-6), bins + 1)
    counts, _ = np.histogram(np.clip(values, 0.0, edges[-1]), bins=edges)
    return pd.DataFrame({"start": edges[:-1], "end": edges[1:], "count": counts})


def loss_histogram(frame: pd.DataFrame, threshold: float, unit: str) -> alt.Chart:
    """Histogram of per-token losses with the selection threshold as a red rule."""
    bars = (
        alt.Chart(frame)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X("start:Q", bin="binned", title=f"loss ({unit}) of each predicted token"),
            x2="end:Q",
            y=alt.Y("count:Q", title="tokens"),
            tooltip=[alt.Tooltip("start:Q", format=".3f"), alt.Tooltip("end:Q", format=".3f"), "count:Q"],
        )
    )
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="#d62728", strokeWidth=2).encode(
        x="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title=f"threshold ({unit})")]
    )
    return (bars + rule).properties(height=220, title="Per-token loss (red: threshold)")


def rank_frequency_frame(sizes, slope: float) -> pd.DataFrame:
    """Columns: rank (1 = largest), size, fit (the least-squares power law through the points)."""
    sizes = np.sort(np.asarray(sizes, dtype=float))[::-1]
    ranks = np.arange(1, len(sizes) + 1)
    frame = pd.DataFrame({"rank": ranks, "size": sizes})
    if len(sizes) >= 2 and not math.isnan(slope):
        intercept = np.mean(np.log(sizes)) - slope * np.mean(np.log(ranks))
        frame["fit"] = np.exp(intercept) * ranks**slope
    else:
        frame["fit"] = np.nan
    return frame


def rank_frequency_chart(frame: pd.DataFrame, slope: float) -> alt.Chart:
    """Cluster size against rank on log-log axes, with the fitted power law."""
    title = "Cluster size vs rank" + ("" if math.isnan(slope) else f" (fitted slope {slope:.2f})")
    base = alt.Chart(frame).encode(x=alt.X("rank:Q", scale=alt.Scale(type="log"), title="rank (log)"))
    points = base.mark_circle(size=60, color="#4c78a8").encode(
        y=alt.Y("size:Q", scale=alt.Scale(type="log"), title="tokens in cluster (log)"), tooltip=["rank", "size"]
    )
    line = base.mark_line(color="#d62728", strokeDash=[5, 3]).encode(y="fit:Q")
    return (points + line).properties(height=300, title=title)


def similarity_heatmap(frame: pd.DataFrame) -> alt.Chart:
    """Cosine similarity of gradients, tokens ordered by cluster (blocks on the diagonal are clusters)."""
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("col:O", axis=None, title="tokens by cluster"),
            y=alt.Y("row:O", axis=None),
            color=alt.Color("similarity:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True),
                            title="cosine"),
            tooltip=["row_cluster", "col_cluster", alt.Tooltip("similarity:Q", format=".3f")],
        )
        .properties(height=300, width=300, title="Gradient similarity, ordered by cluster")
    )
