"""Charts of the Logit lens page: the rows × positions grid with a choice of colour, and side by side KL."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.lens.analysis import Result
from core.tokens import visible

# What the grid's colour can show: (frame column, legend title, scale).
COLOURS = {
    "top-1 probability": ("prob", "top-1 prob", alt.Scale(scheme="blues", domain=[0, 1])),
    "tracked token's probability": ("tracked_prob", "p(tracked)", alt.Scale(scheme="greens", domain=[0, 1])),
    "tracked token's rank": ("tracked_rank", "rank (log)", alt.Scale(type="log", scheme="reds", reverse=True)),
    "entropy (bits)": ("entropy_bits", "entropy (bits)", alt.Scale(scheme="purples")),
    "KL(final ‖ layer) (bits)": ("kl_to_final_bits", "KL (bits)", alt.Scale(type="symlog", scheme="oranges")),
}


def grid_frame(result: Result, tracked: int | None = None) -> pd.DataFrame:
    """One row per (lens row, position): row, row_label, layer, site, position, column, input_token, top_token,
    prob, entropy_bits, kl_to_final_bits, and tracked_token, tracked_prob, tracked_rank for ``tracked``."""
    lens = result.lens
    rows = []
    for row in lens.layers:
        for slot, position in enumerate(lens.positions[0]):
            item = {
                "row": row, "row_label": lens.row_label(row), "layer": lens.layer_of(row),
                "site": lens.sites[row][1] if lens.sites else "block", "position": position,
                "column": f"{position}: {visible(lens.tokens[0][position])}",
                "input_token": lens.tokens[0][position],
                "top_token": visible(lens.top_tokens[row][0][slot][0]),
                "prob": float(lens.top_probs[row, 0, slot, 0]),
                "entropy_bits": float(lens.entropy_bits[row, 0, slot]),
                "kl_to_final_bits": float(lens.kl_to_final_bits[row, 0, slot]),
            }
            if tracked is not None:
                item["tracked_token"] = visible(result.settings.track[tracked])
                item["tracked_prob"] = float(lens.target_probs[row, 0, slot, tracked])
                item["tracked_rank"] = int(lens.target_ranks[row, 0, slot, tracked])
            rows.append(item)
    return pd.DataFrame(rows)


def grid(frame: pd.DataFrame, colour: str = "top-1 probability", title: str | None = None) -> alt.Chart:
    """Rows (bottom = embeddings) × positions; each cell the top-1 token, coloured by ``colour``."""
    field, legend, scale = COLOURS[colour]
    order = list(dict.fromkeys(frame["column"]))
    rows = list(dict.fromkeys(frame.sort_values("row", ascending=False)["row_label"]))
    tooltip = ["row_label", "position", "input_token", "top_token", alt.Tooltip("prob:Q", format=".3f"),
               alt.Tooltip("entropy_bits:Q", format=".2f"), alt.Tooltip("kl_to_final_bits:Q", format=".3f")]
    if "tracked_prob" in frame:
        tooltip += ["tracked_token", alt.Tooltip("tracked_prob:Q", format=".4f"), "tracked_rank"]
    base = alt.Chart(frame, title=title or alt.Undefined).encode(
        x=alt.X("column:N", sort=order, title="input token (position: token)", axis=alt.Axis(labelAngle=-40)),
        y=alt.Y("row_label:N", sort=rows, title="layer (0 = embeddings)"),
        tooltip=tooltip,
    )
    cells = base.mark_rect().encode(color=alt.Color(f"{field}:Q", scale=scale, title=legend))
    text = base.mark_text(fontSize=10, limit=70).encode(text="top_token:N")
    return (cells + text).properties(height=max(260, 20 * len(rows)))


def comparison_chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Per-layer KL between the two sides (x: fraction of depth, so models of different depth line up)."""
    return (
        alt.Chart(frame, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("depth:Q", title="fraction of depth (layer / n_layers)", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("kl_bits:Q", title="KL(A ‖ B) in bits (symlog)", scale=alt.Scale(type="symlog")),
            tooltip=["layer_a", "layer_b", alt.Tooltip("depth:Q", format=".2f"), alt.Tooltip("kl_bits:Q", format=".3f"),
                     "top_a", "top_b"],
        )
        .properties(height=260)
    )
