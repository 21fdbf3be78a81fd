"""Altair charts of the Sequence continuation page: head heatmaps, MLP bars, method scatter, circuits, patterns (no Streamlit)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.tokens import visible

_FMT = dict(logit_diff=".3f", pct_of_full=".1f", change="+.3f")


def _tooltips(*extra):
    return ["component", "layer", "head", *extra,
            alt.Tooltip("logit_diff:Q", title="logit diff after", format=_FMT["logit_diff"]),
            alt.Tooltip("pct_of_full:Q", title="% of full", format=_FMT["pct_of_full"]),
            alt.Tooltip("change:Q", title="change", format=_FMT["change"])]


def head_heatmap(heads: pd.DataFrame, title: str) -> alt.Chart:
    """Layer (rows, 0 at the bottom) × head; colour = % of the full logit difference left after removing the head.

    Keep ``title`` short: Streamlit sizes a chart to its title, and a long one squeezes the cells.

    ``heads`` has the columns of ``SweepResult.heads`` (layer, head, component, logit_diff, pct_of_full, change).
    """
    n_layers = int(heads["layer"].max()) + 1 if len(heads) else 1
    n_heads = int(heads["head"].max()) + 1 if len(heads) else 1
    low = float(min(0.0, heads["pct_of_full"].min())) if len(heads) else 0.0
    high = float(max(200.0 - low, heads["pct_of_full"].max())) if len(heads) else 200.0
    base = alt.Chart(heads, title=title).encode(
        x=alt.X("head:O", title="head"),
        y=alt.Y("layer:O", sort="descending", title="layer"),
        tooltip=_tooltips(),
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("pct_of_full:Q", title="% of full",
                        scale=alt.Scale(scheme="redblue", domain=[low, 100, high], clamp=True)),
    )
    chart = cells
    if n_heads <= 16:
        chart = cells + base.mark_text(fontSize=10).encode(
            text=alt.Text("pct_of_full:Q", format=".0f"),
            color=alt.condition(f"datum.pct_of_full < {0.5 * (low + 100)} || datum.pct_of_full > {0.5 * (high + 100)}",
                                alt.value("white"), alt.value("black")),
        )
    return chart.properties(height=max(240, 20 * n_layers), width=max(240, min(700, 56 * n_heads)))


def mlp_bars(mlps: pd.DataFrame, title: str) -> alt.Chart:
    """Change of the logit difference when each layer's MLP is removed."""
    return (
        alt.Chart(mlps, title=title)
        .mark_bar()
        .encode(
            x=alt.X("change:Q", title="change of the logit difference"),
            y=alt.Y("layer:O", sort="descending", title="layer"),
            color=alt.condition("datum.change < 0", alt.value("#c0392b"), alt.value("#2c7fb8")),
            tooltip=["component", "layer", alt.Tooltip("logit_diff:Q", format=".3f"),
                     alt.Tooltip("pct_of_full:Q", format=".1f"), alt.Tooltip("change:Q", format="+.3f")],
        )
        .properties(height=max(200, 14 * len(mlps)))
    )


def method_scatter(comparison: pd.DataFrame, rho: float | None) -> alt.LayerChart:
    """Exact ablation vs attribution patching, one point per head, with the line y = x."""
    lo = float(min(comparison["exact_change"].min(), comparison["attribution_change"].min(), 0))
    hi = float(max(comparison["exact_change"].max(), comparison["attribution_change"].max(), 0))
    title = "Attribution patching vs exact ablation" + (f" (Spearman ρ = {rho:.2f})" if rho == rho and rho is not None else "")
    points = alt.Chart(comparison, title=title).mark_circle(size=60, opacity=0.8).encode(
        x=alt.X("exact_change:Q", title="exact change of the logit difference", scale=alt.Scale(domain=[lo, hi])),
        y=alt.Y("attribution_change:Q", title="attribution estimate", scale=alt.Scale(domain=[lo, hi])),
        color=alt.Color("layer:Q", scale=alt.Scale(scheme="viridis")),
        tooltip=["component", alt.Tooltip("exact_change:Q", format="+.3f"),
                 alt.Tooltip("attribution_change:Q", format="+.3f")],
    )
    diagonal = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(
        color="gray", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q")
    return (diagonal + points).properties(height=320)


def circuit_heatmap(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Which heads are in the circuit(s): ``frame`` has layer, head, component and ``membership`` (text)."""
    n_layers = int(frame["layer"].max()) + 1
    n_heads = int(frame["head"].max()) + 1
    return (
        alt.Chart(frame, title=title)
        .mark_rect(stroke="white")
        .encode(
            x=alt.X("head:O", title="head"),
            y=alt.Y("layer:O", sort="descending", title="layer"),
            color=alt.Color("membership:N", title="in circuit",
                            scale=alt.Scale(domain=["both", "first task", "second task", "in circuit", "no"],
                                            range=["#6a3d9a", "#e31a1c", "#1f78b4", "#e31a1c", "#eeeeee"])),
            tooltip=["component", "layer", "head", "membership"],
        )
        .properties(height=max(240, 20 * n_layers), width=max(240, min(700, 56 * n_heads)))
    )


def attention_heatmap(pattern: pd.DataFrame, title: str) -> alt.Chart:
    """Query (rows) × key (columns) attention weights; ``pattern`` is ``HeadInspection.pattern_frame()``."""
    frame = pattern.assign(
        q_label=[f"{q}: {visible(t)}" for q, t in zip(pattern["query"], pattern["query_token"])],
        k_label=[f"{k}: {visible(t)}" for k, t in zip(pattern["key"], pattern["key_token"])],
    )
    order = list(dict.fromkeys(frame.sort_values("key")["k_label"]))
    return (
        alt.Chart(frame, title=title)
        .mark_rect()
        .encode(
            x=alt.X("k_label:N", sort=order, title="key (attended-to token)", axis=alt.Axis(labelAngle=-45)),
            y=alt.Y("q_label:N", sort=order, title="query (attending token)"),
            color=alt.Color("weight:Q", scale=alt.Scale(scheme="greens", domain=[0, 1]), title="weight"),
            tooltip=["query", "query_token", "key", "key_token", alt.Tooltip("weight:Q", format=".3f")],
        )
        .properties(height=alt.Step(24))
    )


def successor_bars(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Successor score per token set (one head)."""
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(
            x=alt.X("score:Q", title="successor score", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("token_set:N", title=None, sort=None, axis=alt.Axis(labelLimit=200, labelOverlap=False)),
            tooltip=["token_set", alt.Tooltip("score:Q", format=".2f"), "n_tokens"],
        )
        .properties(height=alt.Step(26))
    )

