"""Altair charts of a key–value lookup ``Result`` (no Streamlit here)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.tokens import visible

TRACE_COLOURS = {"residual": "purples", "mlp": "greens", "attention": "reds"}
TRACE_TITLES = {"residual": "the residual stream", "mlp": "MLP outputs", "attention": "attention outputs"}


def capacity_chart(by_pairs: pd.DataFrame) -> alt.Chart:
    """Accuracy and mean p(answer) against K, the number of pairs in the prompt."""
    long = by_pairs.melt(id_vars=["pairs", "n"], value_vars=["accuracy", "p_answer"], var_name="measure")
    return (
        alt.Chart(long, title="Capacity: accuracy as K grows")
        .mark_line(point=True)
        .encode(
            x=alt.X("pairs:Q", title="K (pairs in the prompt)", scale=alt.Scale(type="log", base=2)),
            y=alt.Y("value:Q", title="accuracy / mean p(answer)", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("measure:N", title=None),
            tooltip=["pairs", "n", "measure", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(height=260)
    )


def position_chart(by_position: pd.DataFrame, k: int) -> alt.Chart:
    """Accuracy by the queried pair's position (1 = first: primacy; K = last: recency)."""
    return (
        alt.Chart(by_position, title=f"Accuracy by the queried pair's position (K = {k})")
        .mark_bar()
        .encode(
            x=alt.X("position:O", title="position of the queried pair (1 = first)"),
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            tooltip=["position", "n", alt.Tooltip("accuracy:Q", format=".2f"), alt.Tooltip("p_answer:Q", format=".3f")],
        )
        .properties(height=260)
    )


def group_chart(frame: pd.DataFrame, by: str, title: str) -> alt.Chart:
    """Accuracy per group (condition, relation…), bars with the count in the tooltip."""
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(
            x=alt.X(f"{by}:N", title=None, sort=list(frame[by])),
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            tooltip=[by, "n", alt.Tooltip("accuracy:Q", format=".2f"), alt.Tooltip("p_answer:Q", format=".3f")],
        )
        .properties(height=260)
    )


def layer_chart(layers: pd.DataFrame, first_correct_layer: int | None) -> alt.Chart:
    """Mean p(answer) at the answer position, layer by layer (logit lens), with the settling layer marked."""
    line = (
        alt.Chart(layers, title="Where the value appears: p(answer) through the logit lens")
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer (0 = embeddings)"),
            y=alt.Y("p_answer:Q", title="mean p(answer)"),
            tooltip=["layer", alt.Tooltip("p_answer:Q", format=".4f")],
        )
    )
    if first_correct_layer is None:
        return line.properties(height=260)
    rule = alt.Chart(pd.DataFrame({"layer": [first_correct_layer],
                                   "label": [f"top-1 from layer {first_correct_layer} (median)"]}))
    marks = rule.mark_rule(strokeDash=[4, 4], color="gray").encode(x="layer:Q") + rule.mark_text(
        align="right", dx=-4, color="gray").encode(x="layer:Q", y=alt.value(12), text="label:N")
    return (line + marks).properties(height=260)


def head_heatmap(attention: pd.DataFrame, confirmed: pd.DataFrame) -> alt.Chart:
    """Attention from the answer position to the queried span, every head × layer; confirmed heads outlined."""
    frame = attention.assign(component=[f"L{l}H{h}" for l, h in zip(attention["layer"], attention["head"])])
    base = alt.Chart(frame, title="Attention from the last position to the queried pair / subject").encode(
        x=alt.X("head:O", title="head"),
        y=alt.Y("layer:O", sort="descending", title="layer"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("attention:Q", scale=alt.Scale(scheme="oranges", domain=[0, 1]), title="attention"),
        tooltip=["component", alt.Tooltip("attention:Q", format=".3f")],
    )
    if confirmed.empty:
        return cells.properties(height=max(240, 16 * frame["layer"].nunique()))
    outline = alt.Chart(confirmed).mark_rect(fill=None, stroke="black", strokeWidth=2).encode(
        x="head:O", y=alt.Y("layer:O", sort="descending"))
    return (cells + outline).properties(height=max(240, 16 * frame["layer"].nunique()))


def ablation_chart(heads: pd.DataFrame, together: dict) -> alt.Chart:
    """p(answer) with each top head ablated, as a % of the full model's (100 = no effect)."""
    frame = heads[["component", "pct_of_full", "attention"]].copy()
    if together:
        frame = pd.concat([frame, pd.DataFrame([{"component": "all together", "pct_of_full": together["pct_of_full"],
                                                 "attention": float("nan")}])], ignore_index=True)
    bars = alt.Chart(frame, title="Ablation: p(answer) as % of the full model").mark_bar().encode(
        x=alt.X("component:N", sort=list(frame["component"]), title=None),
        y=alt.Y("pct_of_full:Q", title="% of the full model's p(answer)"),
        color=alt.condition("datum.pct_of_full < 100", alt.value("#c0392b"), alt.value("#7f8c8d")),
        tooltip=["component", alt.Tooltip("pct_of_full:Q", format=".1f"), alt.Tooltip("attention:Q", format=".3f")],
    )
    rule = alt.Chart(pd.DataFrame({"y": [100]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return (bars + rule).properties(height=260)


def trace_heatmap(trace: pd.DataFrame, kind: str, subject: tuple[int, int]) -> alt.Chart:
    """Indirect effect of restoring ``kind`` at each (layer, position), Meng et al.'s Figure 1; subject tokens starred."""
    frame = trace[trace["kind"] == kind].copy()
    frame["column"] = [f"{p}: {visible(t)}{' *' if subject[0] <= p < subject[1] else ''}"
                       for p, t in zip(frame["position"], frame["token"])]
    order = list(dict.fromkeys(frame.sort_values("position")["column"]))
    top = max(float(frame["indirect_effect"].max()), 1e-6)
    return (
        alt.Chart(frame, title=f"Restoring {TRACE_TITLES[kind]}: indirect effect on p(answer)")
        .mark_rect()
        .encode(
            x=alt.X("column:N", sort=order, title="position (* = subject token)", axis=alt.Axis(labelAngle=-40)),
            y=alt.Y("layer:O", sort="descending", title="layer" + (" (0 = embeddings)" if kind == "residual" else "")),
            color=alt.Color("indirect_effect:Q", title="effect",
                            scale=alt.Scale(scheme=TRACE_COLOURS[kind], domain=[min(0.0, float(frame["indirect_effect"].min())), top])),
            tooltip=["layer", "position", "token", alt.Tooltip("indirect_effect:Q", format=".4f")],
        )
        .properties(height=max(240, 16 * frame["layer"].nunique()))
    )
