"""Altair charts of the Train page: loss curves, skill accuracy, attention, PCA (no Streamlit)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.train.trainer import TrainingHistory

SPLIT_COLOURS = alt.Scale(domain=["train", "validation", "bigram baseline"], range=["#9ecae9", "#e45756", "#555555"])


def loss_chart(history: TrainingHistory, total_steps: int) -> alt.Chart:
    """Train and validation loss against step, with the bigram baseline as a dashed rule."""
    x = alt.X("step:Q", scale=alt.Scale(domain=[0, total_steps]), title="optimisation step")
    y = alt.Y("loss_nats:Q", title="loss (nats per token)", scale=alt.Scale(zero=False))
    colour = alt.Color("split:N", scale=SPLIT_COLOURS, title=None)
    frame = history.loss_frame()
    curves = alt.Chart(frame).mark_line(point=False).encode(x, y, colour, tooltip=["split", "step", "loss_nats"])
    val_points = (
        alt.Chart(frame.query("split == 'validation'"))
        .mark_point(filled=True, size=40)
        .encode(x, y, colour)
    )
    baseline = pd.DataFrame({"loss_nats": [history.bigram_val_loss_nats], "split": ["bigram baseline"]})
    rule = alt.Chart(baseline).mark_rule(strokeDash=[6, 4]).encode(y="loss_nats:Q", color=colour, tooltip=["loss_nats"])
    return (curves + val_points + rule).properties(height=320)


def skills_chart(history: TrainingHistory, total_steps: int) -> alt.Chart:
    """Accuracy of each synthetic skill (greedy continuation exactly right) at each evaluation."""
    return (
        alt.Chart(history.skills_frame())
        .mark_line(point=True)
        .encode(
            alt.X("step:Q", scale=alt.Scale(domain=[0, total_steps]), title="optimisation step"),
            alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="probes solved"),
            alt.Color("skill:N"),
            tooltip=["skill", "step", alt.Tooltip("accuracy:Q", format=".0%")],
        )
        .properties(height=220)
    )


def attention_chart(patterns: pd.DataFrame, layer: int) -> alt.Chart:
    """One heatmap per head of `layer`: rows are queries, columns the keys they attend to."""
    frame = patterns[patterns["layer"] == layer]
    order = frame.drop_duplicates("query_pos").sort_values("query_pos")["query_token"].tolist()
    n_tokens = len(order)
    cell = max(6, min(16, 320 // max(1, n_tokens)))  # two heads side by side fit the page
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            alt.X("key_token:N", sort=order, title="key (attended to)"),
            alt.Y("query_token:N", sort=order, title="query"),
            alt.Color("weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="attention"),
            tooltip=["head", "query_token", "key_token", alt.Tooltip("weight:Q", format=".3f")],
        )
        .properties(width=cell * n_tokens, height=cell * n_tokens)
        .facet(alt.Facet("head:N", title=f"layer {layer}: heads"), columns=2)
    )


def pca_chart(points: pd.DataFrame, colour_by: str, pc_variance: tuple[float, float], top_tokens: int = 10) -> alt.Chart:
    """Scatter of residual PCA points coloured by `colour_by` ("token" or "next_token"); tokens
    outside the `top_tokens` most frequent are grouped as "other"."""
    frame = points.copy()
    frequent = frame[colour_by].value_counts().index[:top_tokens]
    frame["colour"] = frame[colour_by].where(frame[colour_by].isin(frequent), "other")
    return (
        alt.Chart(frame)
        .mark_circle(size=45, opacity=0.75)
        .encode(
            alt.X("pc1:Q", title=f"PC 1 ({pc_variance[0]:.0%} of variance)"),
            alt.Y("pc2:Q", title=f"PC 2 ({pc_variance[1]:.0%} of variance)"),
            alt.Color("colour:N", title=colour_by.replace("_", " "), sort=list(frequent) + ["other"]),
            tooltip=["position", "token", "next_token"],
        )
        .properties(height=420)
    )
