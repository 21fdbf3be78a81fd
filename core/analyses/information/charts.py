"""Altair charts of a Journey-of-information result (no Streamlit): curves per layer, retrieval by
language pair, a PCA scatter and tokens per word."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.tokens import visible

KNOWS = {
    "current_token_acc": "current token (probe)",
    "current_token_nearest_acc": "current token (nearest embedding)",
    "previous_token_acc": "previous token (probe)",
    "next_token_probe_acc": "next token (probe)",
    "next_token_acc": "next token (logit lens)",
}
BITS = {
    "mi_current_token_bits": "current token",
    "mi_previous_token_bits": "previous token",
    "mi_next_token_bits": "next token",
}


def _fit_width(chart):
    """Fill the container's width and keep the given height for the plot: Streamlit's default for a
    stretched chart ("fit") takes legends and titles out of the height and squashes the plot."""
    return chart.properties(autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def _curves(layers: pd.DataFrame, columns: dict[str, str], title: str, y: alt.Y) -> alt.Chart:
    long = layers.melt(id_vars="layer", value_vars=list(columns), var_name="quantity", value_name="value")
    long["quantity"] = long["quantity"].map(columns)
    return _fit_width(
        alt.Chart(long, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer (0 = embeddings)"),
            y=y,
            color=alt.Color("quantity:N", title=None, sort=list(columns.values()), legend=alt.Legend(orient="bottom", columns=2, labelLimit=300)),
            tooltip=["layer", "quantity", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(height=260)
    )


def knows_chart(layers: pd.DataFrame) -> alt.Chart:
    """What the residual still knows: accuracy of each decoder per layer."""
    return _curves(layers, KNOWS, "What the residual still knows (score split)",
                   alt.Y("value:Q", title="top-1 accuracy", scale=alt.Scale(domain=[0, 1])))


def bits_chart(layers: pd.DataFrame) -> alt.Chart:
    """Probe lower bounds on I(residual; token) in bits, per layer."""
    return _curves(layers, BITS, "Lower bound on I(residual; token) = H(token) − CE(probe)",
                   alt.Y("value:Q", title="bits"))


def compression_chart(layers: pd.DataFrame) -> alt.Chart:
    """Effective rank (log scale) and anisotropy side by side."""
    base = alt.Chart(layers).encode(x=alt.X("layer:Q", title="layer (0 = embeddings)"))
    rank = base.mark_line(point=True).encode(
        y=alt.Y("effective_rank:Q", title="effective rank (participation ratio, log)", scale=alt.Scale(type="log")),
        tooltip=["layer", alt.Tooltip("effective_rank:Q", format=".2f")],
    ).properties(title="Effective rank", height=240, width=300)
    aniso = base.mark_line(point=True, color="#d62728").encode(
        y=alt.Y("anisotropy:Q", title="mean cosine of two tokens", scale=alt.Scale(domain=[0, 1])),
        tooltip=["layer", alt.Tooltip("anisotropy:Q", format=".3f")],
    ).properties(title="Anisotropy", height=240, width=300)
    return alt.hconcat(rank, aniso)


def retrieval_chart(retrieval: pd.DataFrame, chance: float) -> alt.Chart:
    """Translation retrieval per layer: the mean over language pairs, and each source language's mean."""
    by_source = retrieval.groupby(["layer", "source"], as_index=False)["accuracy"].mean()
    mean = retrieval.groupby("layer", as_index=False)["accuracy"].mean().assign(source="all pairs")
    x = alt.X("layer:Q", title="layer (0 = embeddings)")
    y = alt.Y("accuracy:Q", title="translation is the nearest neighbour", scale=alt.Scale(domain=[0, 1]))
    sources = alt.Chart(by_source).mark_line(opacity=0.45, strokeWidth=1.5).encode(
        x=x, y=y, color=alt.Color("source:N", title="from"), tooltip=["layer", "source", alt.Tooltip("accuracy:Q", format=".3f")])
    total = alt.Chart(mean).mark_line(point=True, color="black", strokeWidth=3).encode(
        x=x, y=y, tooltip=["layer", alt.Tooltip("accuracy:Q", format=".3f")])
    floor = alt.Chart(pd.DataFrame({"chance": [chance]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="chance:Q")
    return _fit_width((sources + total + floor).properties(title="Where meaning stops depending on the language", height=300))


def pair_heatmap(retrieval: pd.DataFrame, layer: int) -> alt.Chart:
    """Retrieval accuracy of every (source, target) pair at one layer."""
    frame = retrieval[retrieval["layer"] == layer]
    base = alt.Chart(frame).encode(
        x=alt.X("target:N", title="candidates in"), y=alt.Y("source:N", title="word in"),
        tooltip=["source", "target", alt.Tooltip("accuracy:Q", format=".2f")],
    )
    cells = base.mark_rect().encode(color=alt.Color("accuracy:Q", scale=alt.Scale(scheme="greens", domain=[0, 1])))
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("accuracy:Q", format=".2f"),
        color=alt.condition("datum.accuracy > 0.6", alt.value("white"), alt.value("black")),
    )
    return _fit_width((cells + text).properties(title=f"Layer {layer}: each language pair", height=300))


def pca_chart(pca: pd.DataFrame, layer: int, kind: str) -> alt.Chart:
    """One layer's 2-D PCA of the window's tokens (by token class) or of the words (by language)."""
    frame = pca[(pca["layer"] == layer) & (pca["kind"] == kind)].assign(text=lambda f: f["label"].map(visible))
    title = "language" if kind == "word" else "token class"
    return _fit_width(
        alt.Chart(frame, title=f"Layer {layer}: PCA of the {'words' if kind == 'word' else 'tokens'}, coloured by {title}")
        .mark_circle(size=40, opacity=0.7)
        .encode(x=alt.X("x:Q", title="PC 1"), y=alt.Y("y:Q", title="PC 2"),
                color=alt.Color("group:N", title=title), tooltip=["text", "group"])
        .properties(height=360)
    )


def tokens_per_word_chart(per_word: pd.DataFrame) -> alt.Chart:
    """Mean tokens per word of the word list, per language (more tokens: less information per token)."""
    frame = per_word.assign(label=per_word["name"] + " (" + per_word["language"] + ")")
    return _fit_width(
        alt.Chart(frame, title="Tokens per word (the word list)")
        .mark_bar()
        .encode(x=alt.X("tokens_per_word:Q", title="tokens per word"),
                y=alt.Y("label:N", sort="-x", title=None),
                tooltip=["label", alt.Tooltip("tokens_per_word:Q", format=".2f"), "story_tokens"])
        .properties(height=260)
    )
