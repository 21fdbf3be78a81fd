"""Charts of the Features page: the layer × position grid of strongest features beside each site's FVU, a
feature's promoted/suppressed tokens and activation density, and the lens before and after steering."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.features.analysis import Result
from core.analyses.features.steering import SteerResult
from core.tokens import visible


def grid_frame(result: Result) -> pd.DataFrame:
    """One row per (dictionary, position): dictionary, layer, position, column, token, feature (strongest, -1 if
    none), label, activation, relative (activation / the dictionary's largest on this prompt), top_tokens, others."""
    features = result.frames()["features"]
    rows = []
    for order, layer in enumerate(result.layers):
        name = layer.loaded.label
        mine = features[features["dictionary"] == name]
        peak = float(mine["activation"].max()) if len(mine) else 0.0
        for position, token in enumerate(result.tokens):
            here = mine[mine["position"] == position].sort_values("rank")
            first = here.iloc[0] if len(here) else None
            rows.append({
                "dictionary": name, "order": order, "layer": layer.loaded.layer, "position": position,
                "column": f"{position}: {visible(token)}", "token": visible(token),
                "feature": int(first["feature"]) if first is not None else -1,
                "label": str(int(first["feature"])) if first is not None else "",
                "activation": float(first["activation"]) if first is not None else 0.0,
                "relative": float(first["activation"]) / peak if first is not None and peak > 0 else 0.0,
                "top_tokens": visible(first["top_tokens"]) if first is not None else "",
                "others": ", ".join(f"#{int(r.feature)} ({r.activation:.3g}): {visible(r.top_tokens)}"
                                    for r in here.iloc[1:].itertuples()),
                "error_ratio": layer.error_ratio[position],
            })
    return pd.DataFrame(rows)


def feature_grid(frame: pd.DataFrame, fvu: pd.DataFrame) -> alt.HConcatChart:
    """Dictionaries (bottom = earliest layer) × positions: each cell the strongest feature's id, coloured by its
    activation relative to the dictionary's largest on the prompt; beside it, each dictionary's FVU."""
    rows = list(dict.fromkeys(frame.sort_values("order", ascending=False)["dictionary"]))
    order = list(dict.fromkeys(frame["column"]))
    tooltip = ["dictionary", "position", "token", alt.Tooltip("feature:Q", title="feature id"),
               alt.Tooltip("activation:Q", format=".4g"), alt.Tooltip("top_tokens:N", title="promotes"),
               alt.Tooltip("others:N", title="next strongest"), alt.Tooltip("error_ratio:Q", format=".3f",
                                                                            title="‖x − x̂‖ / ‖x‖")]
    base = alt.Chart(frame).encode(
        x=alt.X("column:N", sort=order, title="input token (position: token)",
                axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y("dictionary:N", sort=rows, title="dictionary (site layer)"), tooltip=tooltip)
    cells = base.mark_rect().encode(color=alt.Color("relative:Q", scale=alt.Scale(scheme="oranges", domain=[0, 1]),
                                                    title="activation / row max"))
    text = base.mark_text(fontSize=9, limit=60).encode(text="label:N")
    height = max(120, 28 * len(rows))
    width = max(320, 46 * len(order))
    bars = alt.Chart(fvu).mark_bar().encode(
        y=alt.Y("dictionary:N", sort=rows, axis=None), x=alt.X("fvu:Q", title="FVU (prompt, no BOS)"),
        color=alt.value("#8c6bb1"), tooltip=["dictionary", alt.Tooltip("fvu:Q", format=".3f"), "width", "path"],
    ).properties(width=120, height=height)
    return alt.hconcat((cells + text).properties(height=height, width=width), bars)


def token_bars(tokens: list[str], logits: list[float], title: str, colour: str) -> alt.Chart:
    """Horizontal bars: tokens a direction promotes (or suppresses), by its logit through the lens."""
    frame = pd.DataFrame({"token": [visible(t) for t in tokens], "logit": logits})
    return alt.Chart(frame, title=title).mark_bar(color=colour).encode(
        y=alt.Y("token:N", sort=None, title=None), x=alt.X("logit:Q", title="logit (lens of the direction)"),
        tooltip=["token", alt.Tooltip("logit:Q", format=".3f")]).properties(height=22 * len(frame))


def density_chart(histogram: list[float], edges: list[float], density: float) -> alt.Chart:
    """Counts of the feature's activations on the context corpus, on log10 bins."""
    frame = pd.DataFrame({"from": edges[:-1], "to": edges[1:], "count": histogram})
    frame = frame[frame["count"] > 0]
    title = f"Active on {density:.2%} of tokens"
    return alt.Chart(frame, title=title).mark_bar(color="#e6550d").encode(
        x=alt.X("from:Q", bin="binned", title="log10(activation)"), x2="to:Q",
        y=alt.Y("count:Q", title="tokens"), tooltip=[alt.Tooltip("from:Q", format=".2f"), "count"]).properties(height=180)


def steering_frame(result: SteerResult) -> pd.DataFrame:
    frame = result.frames()["lens"]
    frame["column"] = [f"{p}: {visible(t)}" for p, t in zip(frame["position"], frame["token"])]
    frame["top"] = frame["top_token"].map(visible)
    return frame


def steering_grids(frame: pd.DataFrame) -> alt.FacetChart:
    """The logit lens (top-1 token coloured by its probability) before and after steering, side by side."""
    order = list(dict.fromkeys(frame["column"]))
    base = alt.Chart(frame).encode(
        x=alt.X("column:N", sort=order, title="input token", axis=alt.Axis(labelAngle=-40)),
        y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
        tooltip=["which", "layer", "position", "token", "top", alt.Tooltip("prob:Q", format=".3f")])
    cells = base.mark_rect().encode(color=alt.Color("prob:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                                                    title="top-1 prob"))
    text = base.mark_text(fontSize=9, limit=55).encode(text="top:N")
    rows = frame["layer"].nunique()
    return (cells + text).properties(height=max(200, 18 * rows), width=380).facet(
        column=alt.Column("which:N", sort=["before", "after"], title=None))
