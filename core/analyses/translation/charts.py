"""Altair charts of the translation analysis (the Translation latent language page); no Streamlit here."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.analyses.translation.analysis import Settings
from core.analyses.translation.prompts import SLOTS
from core.analyses.translation.wordlist import LANGUAGES
from core.tokens import visible

# Target, latent, source: the paper's colours (target orange, English blue), source green.
SLOT_COLORS = {"target": "#e6550d", "latent": "#3182bd", "source": "#31a354"}


def slot_label(slot: str, settings: Settings) -> str:
    code = getattr(settings, slot)
    return f"{slot}: {LANGUAGES[code].english_name} ({code})"


def curves_long(curves: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One row per (layer, language): columns layer, language, p, lo, hi."""
    parts = []
    for slot in SLOTS:
        if settings.task == "repetition" and slot == "source":
            continue  # the source is the target in the repetition task
        parts.append(pd.DataFrame({
            "layer": curves["layer"], "language": slot_label(slot, settings),
            "p": curves[f"p_{slot}"], "lo": curves[f"p_{slot}_lo"], "hi": curves[f"p_{slot}_hi"],
        }))
    return pd.concat(parts, ignore_index=True)


def language_curves(curves: pd.DataFrame, settings: Settings, n_words: int) -> alt.LayerChart:
    """Mean probability of each language per layer with its 95% band; mean entropy (bits) on the right axis."""
    long = curves_long(curves, settings)
    labels = list(dict.fromkeys(long["language"]))
    colors = [SLOT_COLORS[label.split(":")[0]] for label in labels]
    color = alt.Color("language:N", scale=alt.Scale(domain=labels, range=colors), title=None,
                      legend=alt.Legend(orient="top"))
    x = alt.X("layer:Q", title="layer (0 = embeddings)", scale=alt.Scale(domain=[0, int(curves["layer"].max())]))
    base = alt.Chart(long)
    band = base.mark_area(opacity=0.2).encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q", color=color)
    line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("p:Q", title=f"mean probability (95% band, n = {n_words})", scale=alt.Scale(domain=[0, 1])),
        color=color,
        tooltip=["layer", "language", alt.Tooltip("p:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f"),
                 alt.Tooltip("hi:Q", format=".3f")],
    )
    entropy = alt.Chart(curves.assign(quantity="entropy (bits)")).mark_line(strokeDash=[4, 3], color="#666").encode(
        x=x,
        y=alt.Y("entropy_bits:Q", title="entropy (bits)", axis=alt.Axis(titleColor="#666")),
        tooltip=["layer", alt.Tooltip("entropy_bits:Q", format=".2f")],
    )
    return alt.layer(band + line, entropy).resolve_scale(y="independent").properties(
        height=340, title="Which language does each layer decode to? (dashed: entropy)"
    )


def energy_chart(curves: pd.DataFrame) -> alt.Chart:
    """Mean energy of the answer position's residual against the unembedding, per layer."""
    return (
        alt.Chart(curves, title="Energy of the last position's residual (only the shape compares across models)")
        .mark_line(point=True, color="#756bb1")
        .encode(
            x=alt.X("layer:Q", title="layer (0 = embeddings)"),
            y=alt.Y("energy:Q", title="energy"),
            tooltip=["layer", alt.Tooltip("energy:Q", format=".3f")],
        )
        .properties(height=220)
    )


def drill_down_chart(table: pd.DataFrame, n_layers: int) -> alt.Chart:
    """Layers x rank at the answer position: each cell a top token, coloured by the language it belongs to."""
    frame = table.assign(label=table["token"].map(visible),
                         text=lambda t: t["label"] + " " + t["prob"].map(lambda p: f"{p:.2f}"))
    order = list(dict.fromkeys(sorted(frame["language"], key=_language_order)))
    palette = [SLOT_COLORS.get(lang.split(":")[0], None) for lang in order]
    others = iter(["#bdbdbd", "#fdd0a2", "#c6dbef", "#dadaeb", "#d9d9d9", "#fee391", "#c7e9c0", "#f2f2f2"])
    palette = [c or next(others, "#eeeeee") for c in palette]
    base = alt.Chart(frame).encode(
        x=alt.X("rank:O", title="rank at the answer position", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
        tooltip=["layer", "rank", "token", "token_id", alt.Tooltip("prob:Q", format=".3f"), "language"],
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("language:N", scale=alt.Scale(domain=order, range=palette), title=None,
                        legend=alt.Legend(orient="top", columns=3)),
        opacity=alt.Opacity("prob:Q", scale=alt.Scale(domain=[0, 0.5], clamp=True, range=[0.35, 1]), legend=None),
    )
    text = base.mark_text(fontSize=10, limit=90).encode(text="text:N")
    return (cells + text).properties(height=max(260, 24 * (n_layers + 1)),
                                     title="Top tokens per layer, coloured by language")


def _language_order(label: str) -> tuple[int, str]:
    head = label.split(":")[0]
    return (SLOTS.index(head) if head in SLOTS else len(SLOTS), label)


def _band_lines(curves: pd.DataFrame, columns: dict[str, str], colors: list[str], title: str,
                y_title: str) -> alt.LayerChart:
    """Mean lines with 95% bands of ``columns`` (curve column -> label) against the patched / steered lens row."""
    long = pd.concat([pd.DataFrame({"layer": curves["layer"], "read": label, "p": curves[column],
                                    "lo": curves[f"{column}_lo"], "hi": curves[f"{column}_hi"]})
                      for column, label in columns.items()], ignore_index=True)
    labels = list(columns.values())
    color = alt.Color("read:N", scale=alt.Scale(domain=labels, range=colors), title=None, legend=alt.Legend(orient="top"))
    x = alt.X("layer:Q", title="lens row patched (0 = embeddings)", scale=alt.Scale(domain=[0, int(curves["layer"].max())]))
    base = alt.Chart(long)
    band = base.mark_area(opacity=0.2).encode(x=x, y="lo:Q", y2="hi:Q", color=color)
    line = base.mark_line(point=True).encode(
        x=x, y=alt.Y("p:Q", title=y_title), color=color,
        tooltip=["layer", "read", alt.Tooltip("p:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f"),
                 alt.Tooltip("hi:Q", format=".3f")])
    return (band + line).properties(height=300, title=title)


def causal_curves(causal, settings: Settings) -> alt.LayerChart:
    """Concept patching (``CausalResult``): p(A in the receiver's language), p(B), p(A in the source's language)."""
    receiver, source = LANGUAGES[causal.into[1]].english_name, LANGUAGES[settings.target].english_name
    columns = {"p_a_receiver_lang": f"A in {receiver}: the concept alone", "p_b": f"B in {receiver}: nothing moved",
               "p_a_source_lang": f"A in {source}: concept and language"}
    return _band_lines(causal.curves(), columns, ["#e6550d", "#969696", "#31a354"],
                       f"Patched at each row: what the receiving prompt answers (n = {causal.n_pairs} pairs)",
                       "mean probability at the output (95% band)")


def steering_curves(steering) -> alt.LayerChart:
    """Language steering (``SteeringResult``): p(answer in X), in Y and in English per steered row."""
    x, y = (LANGUAGES[code].english_name for code in (steering.x, steering.y))
    columns = {"p_x": f"answer in {x}", "p_y": f"answer in {y}", "p_en": "answer in English"}
    return _band_lines(steering.curves(), columns, ["#e6550d", "#31a354", "#3182bd"],
                       f"{x} − {y} direction added with α = {steering.alpha:g} at each row",
                       "mean probability at the output (95% band)")
