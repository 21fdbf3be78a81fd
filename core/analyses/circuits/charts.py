"""Charts of a circuit graph (Altair, no Streamlit): tokens along x, layers along y, edges as lines, and a head's
attention over the positions it reads.

Layout: the residual after block ℓ sits on row ℓ + 1 (row 0: the embeddings), what block ℓ writes (its heads and
MLP, or its transcoder features and error nodes) half a row below it, at ℓ + 0.5; logits on row n_layers + 1.
Nodes sharing a cell (heads, features) are spread across the cell's width by influence.
"""

from __future__ import annotations

import json

import altair as alt
import pandas as pd

from core.analyses.circuits.analysis import Result
from core.tokens import visible

MAX_EDGES = 2000  # the strongest edges drawn (an attribution graph keeps 10⁵; the exports keep them all)
KIND_COLOURS = {"embed": "#7f7f7f", "residual": "#9ecae1", "head": "#4c78a8", "mlp": "#f58518", "feature": "#54a24b",
                "error": "#e45756", "logit": "#b279a2"}




def _detail(result: Result, node_id: str) -> str:
    d = result.details.get(node_id, {})
    if "lens" in d:
        return "lens: " + ", ".join(f"{visible(t)} {p:.2f}" for t, p in d["lens"])
    if "attention" in d:
        tokens = result.graph.tokens
        top = sorted(enumerate(d["attention"]), key=lambda x: -x[1])[:3]
        return "reads: " + ", ".join(f"{visible(tokens[s])}@{s} {w:.2f}" for s, w in top)
    if "promoted" in d:
        return "promotes: " + " ".join(visible(t) for t in d["promoted"])
    return ""


def node_frame(result: Result) -> pd.DataFrame:
    """One row per node: id, kind, label, layer, position, token, x, y, influence, activation, detail."""
    graph = result.graph
    rows = []
    for n in graph.nodes:
        y = {"embed": 0.0, "residual": float(n.layer), "logit": graph.n_layers + 1.0}.get(n.kind, n.layer + 0.5)
        rows.append({"id": n.id, "kind": n.kind, "label": visible(n.label), "layer": n.layer, "position": n.position,
                     "token": visible(graph.tokens[n.position]), "y": y, "influence": n.influence,
                     "activation": n.activation if n.activation is not None else float("nan"),
                     "detail": _detail(result, n.id)})
    frame = pd.DataFrame(rows)
    frame["x"] = frame["position"].astype(float)
    spread = frame["kind"].isin(["head", "mlp", "feature", "error", "logit"])
    for _, cell in frame[spread].groupby(["y", "position"]):
        order = cell.sort_values(["kind", "influence"], ascending=[True, False]).index
        width = 0.8 if len(order) > 1 else 0.0
        for rank, index in enumerate(order):
            frame.loc[index, "x"] += -width / 2 + width * (rank + 0.5) / len(order) if width else 0.0
    return frame


def edge_frame(result: Result, nodes: pd.DataFrame) -> pd.DataFrame:
    """One row per edge, the ``MAX_EDGES`` strongest: source, target, weight, magnitude (|weight| / the largest),
    sign, x, y, x2, y2."""
    at = nodes.set_index("id")[["x", "y"]]
    edges = pd.DataFrame([(e.source, e.target, e.weight) for e in result.graph.edges],
                         columns=["source", "target", "weight"])
    if edges.empty:
        return edges.assign(magnitude=[], sign=[], x=[], y=[], x2=[], y2=[])
    edges = edges.join(at, on="source").join(at.rename(columns={"x": "x2", "y": "y2"}), on="target")
    edges["magnitude"] = edges["weight"].abs() / edges["weight"].abs().max()
    edges["sign"] = (edges["weight"] >= 0).map({True: "positive", False: "negative"})
    return edges.sort_values("magnitude").tail(MAX_EDGES)


def graph_chart(result: Result, width: int | None = None) -> alt.LayerChart:
    """The graph: edges under nodes; a node's size is its influence, its colour its kind. Clicking a node toggles it
    in the selection ``pick`` (by ``id``), which rings it."""
    graph = result.graph
    nodes = node_frame(result)
    edges = edge_frame(result, nodes)
    tokens = json.dumps([f"{visible(t)}·{i}" for i, t in enumerate(graph.tokens)], ensure_ascii=False)
    rows = json.dumps(["emb"] + [f"after {i}" for i in range(graph.n_layers)] + ["logits"])
    x = alt.X("x:Q", title="position", scale=alt.Scale(domain=[-0.6, len(graph.tokens) - 0.4], nice=False),
              axis=alt.Axis(values=list(range(len(graph.tokens))), labelExpr=f"{tokens}[datum.value]", labelAngle=-45,
                            grid=False))
    y = alt.Y("y:Q", title="layer", scale=alt.Scale(domain=[-0.5, graph.n_layers + 1.5], nice=False),
              axis=alt.Axis(values=list(range(graph.n_layers + 2)), labelExpr=f"{rows}[datum.value]", grid=True))
    routes = graph.kind == "routes"
    colour = alt.value("#888888") if routes else alt.Color(
        "sign:N", scale=alt.Scale(domain=["positive", "negative"], range=["#4c78a8", "#e45756"]), title="effect")
    lines = alt.Chart(edges).mark_rule().encode(
        x=x, y=y, x2="x2:Q", y2="y2:Q", color=colour,
        opacity=alt.Opacity("magnitude:Q", scale=alt.Scale(domain=[0, 1], range=[0.08, 0.9]), legend=None),
        strokeWidth=alt.StrokeWidth("magnitude:Q", scale=alt.Scale(domain=[0, 1], range=[0.5, 4]), legend=None),
        tooltip=["source", "target", alt.Tooltip("weight:Q", format=".3f")])
    pick = alt.selection_point(name="pick", fields=["id"], on="click", toggle="true", empty=False)
    kinds = [k for k in KIND_COLOURS if k in set(nodes["kind"])]
    points = alt.Chart(nodes).mark_circle(stroke="black").encode(
        x=x, y=y,
        color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=[KIND_COLOURS[k] for k in kinds]), title="node",
                        legend=alt.Legend(symbolStrokeWidth=0)),
        size=alt.Size("influence:Q", scale=alt.Scale(range=[40, 600]), legend=None),
        strokeWidth=alt.condition(pick, alt.value(2.5), alt.value(0)),
        opacity=alt.value(0.9),
        tooltip=["label", "kind", "layer", "position", "token", alt.Tooltip("influence:Q", format=".3f"),
                 alt.Tooltip("activation:Q", format=".3g"), "detail", "id"],
    ).add_params(pick)
    what = "routes (Ferrando & Voita; threshold " f"{graph.threshold:g})" if routes else \
        f"attribution graph ({graph.scan}; node threshold {graph.threshold:g}, edge threshold {graph.edge_threshold:g})"
    return alt.layer(lines, points).resolve_scale(color="independent").properties(
        title=f"{what}: {visible(graph.prompt)} → {visible(graph.target)}",
        width=width or max(420, 56 * len(graph.tokens)), height=max(320, 26 * (graph.n_layers + 2)))


def attention_chart(result: Result, node_id: str) -> alt.Chart:
    """A head's attention from its position over the positions it reads."""
    node = result.graph.node(node_id)
    weights = result.details[node_id]["attention"]
    frame = pd.DataFrame({"source": [f"{visible(t)}·{i}" for i, t in enumerate(result.graph.tokens[: len(weights)])],
                          "weight": weights, "order": range(len(weights))})
    return alt.Chart(frame).mark_bar(color=KIND_COLOURS["head"]).encode(
        x=alt.X("source:N", sort=alt.SortField("order"), title="reads from"), y=alt.Y("weight:Q", title="attention"),
        tooltip=["source", alt.Tooltip("weight:Q", format=".3f")],
    ).properties(title=f"{node.label} at position {node.position}: attention over the positions it reads", height=200)
