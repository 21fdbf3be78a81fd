"""Charts of a direct logit attribution (Altair, no Streamlit): heads × layers, and per-layer bars."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.attribute.analysis import Result
from core.tokens import visible

PART_COLOURS = {"embed": "#7f7f7f", "attention": "#4c78a8", "MLP": "#f58518", "bias": "#b279a2"}


def _label(token: str) -> str:
    """A token for a title: spaces made visible, control characters escaped (vl-convert aborts on them)."""
    return visible("".join(ch if ch.isprintable() or ch in " \n\t" else f"\\x{ord(ch):02x}" for ch in token))


def _what(result: Result) -> str:
    """'logit(␣Paris)' or 'logit(␣Paris) − logit(␣London)'."""
    text = f"logit({_label(result.target)})"
    return text + (f" − logit({_label(result.versus)})" if result.versus is not None else "")


def _symmetric_domain(values: pd.Series) -> list[float]:
    extent = float(values.abs().max()) if len(values) else 0.0
    extent = extent if extent > 0 else 1.0
    return [-extent, extent]


def heads_frame(result: Result) -> pd.DataFrame:
    """One row per head: layer, head, name, value."""
    frame = result.frames()["components"]
    heads = frame[frame["kind"] == "head"][["layer", "head", "name", "value"]]
    return heads.astype({"layer": int, "head": int}).reset_index(drop=True)


def heads_heatmap(result: Result) -> alt.Chart:
    """Heads (rows) × layers (columns), colour = the head's contribution on a diverging scale centred at 0."""
    frame = heads_frame(result)
    return alt.Chart(frame).mark_rect().encode(
        x=alt.X("layer:O", title="layer", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("head:O", title="head"),
        color=alt.Color(
            "value:Q", title="contribution",
            scale=alt.Scale(scheme="redblue", domain=_symmetric_domain(frame["value"]), domainMid=0),
        ),
        tooltip=["name", "layer", "head", alt.Tooltip("value:Q", format="+.3f")],
    ).properties(title=f"Each head's direct contribution to {_what(result)}",
                 height=max(160, 26 * result.n_heads))  # no fixed width: pages stretch it (a fixed one squashed it)


def layer_bars_frame(result: Result) -> pd.DataFrame:
    """The bars: column (x label: "embed", each layer, "bias"), part (embed, attention, MLP, bias), value.

    A layer's attention bar is the sum of its heads; its attention output bias (GPT-2, GPT-NeoX) is counted
    in the "bias" column together with the final norm's and the unembedding's biases.
    """
    frames = result.frames()
    components, per_layer = frames["components"], frames["layers"]
    rows = [("embed", "embed", float(components.loc[components["kind"] == "embed", "value"].sum()))]
    for layer, attention, mlp in per_layer[["layer", "attention", "mlp"]].itertuples(index=False):
        rows += [(str(layer), "attention", float(attention)), (str(layer), "MLP", float(mlp))]
    biases = components[components["kind"] == "bias"]
    if len(biases):
        rows.append(("bias", "bias", float(biases["value"].sum())))
    return pd.DataFrame(rows, columns=["column", "part", "value"])


def layer_bars(result: Result) -> alt.Chart:
    """Per layer: attention (sum of heads) and MLP side by side, plus the embeddings and the biases."""
    frame = layer_bars_frame(result)
    order = list(dict.fromkeys(frame["column"]))
    parts = [p for p in PART_COLOURS if p in set(frame["part"])]
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("column:N", sort=order, title="layer", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("part:N", sort=parts),
        y=alt.Y("value:Q", title="contribution"),
        color=alt.Color("part:N", sort=parts, title="part",
                        scale=alt.Scale(domain=parts, range=[PART_COLOURS[p] for p in parts])),
        tooltip=["column", "part", alt.Tooltip("value:Q", format="+.3f")],
    ).properties(title=f"Direct contributions to {_what(result)} = {result.total:.3f} (before any soft cap)")
