"""The charts of a stored result, for bundles: analysis name -> a function building its charts from its Result.

Each builder calls the analysis's own ``charts.py`` the way its page does, so a bundle's PNG and SVG show what
the page showed. An analysis without a builder here gets its tables and JSON in a bundle, and no charts.
"""

from __future__ import annotations

from typing import Any, Callable

Figures = Callable[[Any], dict]  # Result -> {name: altair chart}


def _lens(result) -> dict:
    from core.analyses.lens.charts import grid, grid_frame

    out = {"grid": grid(grid_frame(result), "top-1 probability", title=f"{result.lens.lens} lens")}
    for t, token in enumerate(result.settings.track):
        out[f"grid_tracked_{t}"] = grid(grid_frame(result, t), "tracked token's probability",
                                        title=f"{result.lens.lens} lens · p({token})")
    return out


def _attribute(result) -> dict:
    from core.analyses.attribute.charts import heads_heatmap, layer_bars

    return {"heads": heads_heatmap(result), "layers": layer_bars(result)}


def _translation(result) -> dict:
    from core.analyses.translation.charts import energy_chart, language_curves

    curves = result.frames()["curves"]
    out = {"curves": language_curves(curves, result.settings, result.n_words)}
    if result.energy is not None:
        out["energy"] = energy_chart(curves)
    return out


def _sequences(result) -> dict:
    from core.analyses.sequences.charts import head_heatmap, method_scatter, mlp_bars

    out = {}
    for sweep in (result.sweeps.exact, result.sweeps.attribution):
        if sweep is not None:
            label = "exact" if sweep.method == "ablation" else "attribution estimate"
            out[f"{sweep.method}_heads"] = head_heatmap(sweep.heads, f"Without each head ({label})")
            out[f"{sweep.method}_mlps"] = mlp_bars(sweep.mlps, "Without each MLP")
    comparison = result.sweeps.comparison()
    if len(comparison):
        out["methods"] = method_scatter(comparison, result.sweeps.spearman_heads)
    return out


FIGURES: dict[str, Figures] = {"lens": _lens, "attribute": _attribute, "translation": _translation,
                               "sequences": _sequences}


def figures(analysis: str, result) -> dict:
    """{name: chart} of ``result`` ({} for an analysis without charts here)."""
    build = FIGURES.get(analysis)
    return build(result) if build is not None else {}
