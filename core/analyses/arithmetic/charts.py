"""Altair charts of the arithmetic analysis (the "Numerals and arithmetic" page); no Streamlit here."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.arithmetic.numerals import SYSTEM_KEYS, SYSTEMS
from core.tokens import visible

# One colour per numeral system everywhere on the page; tokens that are none of them are grey.
SYSTEM_COLORS = {
    "arabic": "#1f77b4",
    "devanagari": "#d62728",
    "tamil": "#2ca02c",
    "bengali": "#9467bd",
    "eastern_arabic": "#8c564b",
    "english_words": "#17becf",
    "hindi_words": "#ff7f0e",
    "bytes": "#bcbd22",
    "other": "#d9d9d9",
}
CATEGORY_LABELS = {k: SYSTEMS[k].label for k in SYSTEM_KEYS} | {"bytes": "byte token", "other": "other"}


def _system_scale(keys: list[str], field: str = "label") -> alt.Scale:
    labels = [CATEGORY_LABELS[k] for k in keys]
    return alt.Scale(domain=labels, range=[SYSTEM_COLORS[k] for k in keys])


def accuracy_bars(frame: pd.DataFrame) -> alt.Chart:
    """Grouped bars per numeral system: exact accuracy in the prompt's own system (with its Wilson 95%
    interval) next to "the right number in any system". ``frame`` is ``AccuracyResult.frame``."""
    long = pd.concat(
        [
            frame.assign(measure="exact, in the prompt's system", value=frame["accuracy"]),
            frame.assign(measure="right number, any system", value=frame["value_accuracy"],
                         ci_low=frame["value_accuracy"], ci_high=frame["value_accuracy"]),
        ]
    )[["label", "measure", "value", "ci_low", "ci_high", "n", "correct"]]
    order = list(frame["label"])
    base = alt.Chart(long).encode(
        x=alt.X("label:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30, labelOverlap=False, labelLimit=200)),
        xOffset=alt.XOffset("measure:N"),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("value:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("measure:N", title=None, scale=alt.Scale(range=["#4c78a8", "#b8cce4"]),
                        legend=alt.Legend(orient="top", labelLimit=320)),
        tooltip=["label", "measure", alt.Tooltip("value:Q", format=".2f"), "n",
                 alt.Tooltip("ci_low:Q", format=".2f"), alt.Tooltip("ci_high:Q", format=".2f")],
    )
    errors = base.mark_rule(color="black").encode(y="ci_low:Q", y2="ci_high:Q")
    n = int(frame["n"].max()) if len(frame) else 0
    return (bars + errors).properties(height=300, title=f"Accuracy per numeral system (n = {n} problems each)")


def layer_probability_chart(frame: pd.DataFrame, first_correct_layer: int | None, numerals: str) -> alt.LayerChart:
    """Mean lens probability of the answer in each system per layer, with 95% bands; a rule marks the
    first layer where the answer (in the prompts' system) is top-1. ``frame`` is ``LayerProfile.frame()``."""
    keys = list(dict.fromkeys(frame["system"]))
    scale = _system_scale(keys)
    base = alt.Chart(frame).encode(x=alt.X("layer:Q", title="layer (0 = embeddings)", axis=alt.Axis(tickMinStep=1)))
    bands = base.mark_area(opacity=0.18).encode(
        y=alt.Y("ci_low:Q", title="probability of the answer's first character"), y2="ci_high:Q",
        color=alt.Color("label:N", scale=scale, title="answer written in"),
    )
    lines = base.mark_line(point=True).encode(
        y="mean:Q",
        color=alt.Color("label:N", scale=scale, title="answer written in"),
        tooltip=["layer", "label", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f"), "n"],
    )
    chart = bands + lines
    if first_correct_layer is not None:
        mark = pd.DataFrame({"layer": [first_correct_layer], "text": [f"answer top-1 from layer {first_correct_layer}"]})
        rule = alt.Chart(mark).mark_rule(strokeDash=[5, 4], color="black").encode(x="layer:Q")
        text = alt.Chart(mark).mark_text(align="right", dx=-4, baseline="top").encode(
            x="layer:Q", y=alt.value(12), text="text:N"
        )
        chart = chart + rule + text
    return chart.properties(height=340, title=f"Problems written in {SYSTEMS[numerals].label}: where is the answer?")


def topk_grid(top: pd.DataFrame) -> alt.LayerChart:
    """Top-k tokens per layer at the answer position, each cell coloured by the numeral system of its token.
    ``top`` is ``DrillDown.top_frame()``."""
    frame = top.assign(
        shown=top["token"].map(visible),
        category=top["system"].map(CATEGORY_LABELS),
    )
    keys = [k for k in CATEGORY_LABELS if k in set(top["system"])]
    n_layers = int(top["layer"].max()) if len(top) else 0
    base = alt.Chart(frame).encode(
        x=alt.X("rank:O", title="rank"),
        y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
        tooltip=["layer", "rank", "token", "token_id", alt.Tooltip("prob:Q", format=".3f"), "category"],
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("category:N", scale=_system_scale(keys), title="token is"),
        opacity=alt.Opacity("prob:Q", scale=alt.Scale(domain=[0, 0.5], clamp=True, range=[0.35, 1]), legend=None),
    )
    text = base.mark_text(fontSize=10, limit=60).encode(text="shown:N")
    return (cells + text).properties(height=max(260, 22 * (n_layers + 1)), title="Top tokens at the answer position")
