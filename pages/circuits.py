"""Page: circuits. Which path through the model leads from the prompt to its prediction?"""

import json
from functools import partial

import pandas as pd
import streamlit as st

from core.analyses import circuits as cx
from core.analyses.circuits.charts import attention_chart, graph_chart
from core.analyses.circuits.check import CheckSettings, run_check
from core.analyses.features import explain
from ui.links import Inputs
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE = "circuits"


st.title("🕸️ Circuits")
st.markdown(
    "The graph from the prompt to the model's prediction. **Routes** (Ferrando & Voita 2024, as Meta's LLM "
    "Transparency Tool draws them) need no dictionary: from one forward pass, each residual, head and MLP is "
    "weighed by how much of the sum it writes into is made of it, parts below the threshold are dropped, and the "
    "graph is grown down from the prediction. An **attribution graph** (Ameisen et al. 2025, circuit-tracer) "
    "replaces every MLP by a transcoder, freezes attention patterns and norm scales, and draws the direct effects "
    "between token embeddings, transcoder features, error nodes and the top logits, pruned by influence; its "
    "replacement and completeness scores say how much of the computation the features explain. Click nodes to pin "
    "them, then check the graph: ablate or patch the pinned nodes in the model and compare with the graph's own "
    "prediction of that effect."
)

KIND_LABELS = {"routes": "routes (no dictionary)", "attribution": "attribution graph (transcoders)"}

# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Circuits")
with main.form("Draw the graph"):
    prompt = main.text_area("Prompt", "The Eiffel Tower is in the city of", "prompt", height=80)
    kind = main.radio("Graph", list(KIND_LABELS), "routes", "kind", format_func=KIND_LABELS.get)
    target = main.text_input("Target token (empty: the prediction)", "", "target",
                             help="one token, with its leading space (\" Paris\"), or an id as #1234")
    threshold = main.slider("Routes: threshold", 0.01, 0.30, 0.04, "threshold", step=0.01,
                            help="a part whose share of the sum it belongs to is below this is dropped")
    with st.expander("Attribution graph"):
        node_threshold = main.slider("Node threshold (share of influence kept)", 0.5, 1.0, 0.8, "node_threshold",
                                     step=0.01)
        edge_threshold = main.slider("Edge threshold (share of edge influence kept)", 0.8, 1.0, 0.98,
                                     "edge_threshold", step=0.005)
        dictionary = main.text_input("Transcoders folder (empty: this model's own)", "", "dict",
                                     help="one transcoder folder per block (Gemma Scope, SAELens or sparsify layout)")

check_inputs = Inputs(PAGE, "check", label="Check by intervention")
with check_inputs.form("Check the pinned nodes", title="Check by intervention", expanded=True):
    mode = check_inputs.radio("Intervention", ["ablate", "patch"], "ablate", "mode", horizontal=True,
                              format_func={"ablate": "ablate (zero)", "patch": "patch from a corrupted prompt"}.get)
    corrupt = check_inputs.text_input("Corrupted prompt (same token length)", "", "corrupt",
                                      placeholder="The Colosseum is in the city of")

# -- the graph ----------------------------------------------------------------------------------------------
settings = cx.Settings(prompt=prompt, kind=kind, target=target or None, dictionary=dictionary.strip() or None,
                       threshold=float(threshold), node_threshold=float(node_threshold),
                       edge_threshold=float(edge_threshold))
result = run_analysis(main, "circuits", cx.run, settings, button="Draw the graph")
if result is None:
    st.info("Type a prompt in the sidebar and press **Draw the graph**.")
    st.stop()
graph = result.graph
frames = result.frames()

cols = st.columns(4)
logits = [n for n in graph.nodes if n.kind == "logit"]
chosen = next(n for n in logits if n.token_id == graph.target_id)
cols[0].metric("Target", repr(graph.target), f"p = {chosen.probability:.3f}", delta_color="off", delta_arrow="off")
cols[1].metric("Nodes / edges", f"{len(graph.nodes)} / {len(graph.edges)}")
if graph.scores is not None:
    cols[2].metric("Replacement score", f"{graph.scores.replacement:.3f}",
                   help="influence of the tokens / (tokens + error nodes) on the logits (circuit-tracer)")
    cols[3].metric("Completeness score", f"{graph.scores.completeness:.3f}",
                   help="influence-weighted share of every node's inputs that come from features and tokens")
else:
    top = max((n for n in graph.nodes if n.kind == "head"), key=lambda n: n.influence, default=None)
    if top is not None:
        cols[2].metric("Heaviest head", f"{top.label} @ {top.position}", f"{top.influence:.0%} of the route",
                       delta_color="off", delta_arrow="off")

# Components (heads, MLPs, features, error nodes) first, most influential first; then tokens and residuals.
ids = [n.id for n in sorted(graph.nodes, key=lambda n: (n.kind in ("residual", "embed"), -n.influence))
       if n.kind != "logit"]
chart = graph_chart(result)
event = st.altair_chart(chart, on_select="rerun", selection_mode="pick", key=f"{PAGE}:chart")
st.caption("Size: the node's share of the influence on the prediction; lines: "
           + ("each part's share of what it writes into." if graph.kind == "routes" else
              "direct effects (blue raises, red lowers the target).") + " Hover a node for the lens's top tokens at a "
           "residual, what a head reads, or the tokens a feature promotes; click nodes to pin them (click again to "
           "unpin).")
parts = frames["nodes"][frames["nodes"]["kind"].isin(["head", "mlp", "feature", "error"])]
st.dataframe(parts.sort_values("influence", ascending=False).head(12)[
    ["label", "kind", "layer", "position", "influence", "activation"]].round(4), width="stretch", hide_index=True)
c1, c2, c3 = st.columns(3)
downloads(c1, f"circuit_{graph.kind}", chart=chart)
downloads(c2, f"circuit_{graph.kind}_nodes", frame=frames["nodes"])
c3.download_button("circuit-tracer JSON", json.dumps(graph.to_circuit_tracer(), ensure_ascii=False),
                   file_name=f"circuit_{graph.kind}.json", mime="application/json", on_click="ignore",
                   help="opens in circuit-tracer's local frontend")

# Pins: the chart's clicked nodes join them, nodes clicked off leave them; the list below edits them too.
pins_key, seen_key = f"{PAGE}:pins", f"{PAGE}:clicked"
clicked = [p["id"] for p in ((event.selection or {}).get("pick") or [])] if event else []
before = st.session_state.get(seen_key, [])
kept = [i for i in st.session_state.get(pins_key, []) if i in ids and (i not in before or i in clicked)]
st.session_state[pins_key] = kept + [i for i in clicked if i in ids and i not in kept]
st.session_state[seen_key] = clicked

# -- one node ------------------------------------------------------------------------------------------------
pinned = st.multiselect("Pinned nodes (the subgraph to check)", ids, key=pins_key,
                        format_func=lambda i: f"{graph.node(i).label} @ {graph.node(i).position}")
focus = st.selectbox("Look at a node", ids, index=0, key=f"{PAGE}:focus",
                     format_func=lambda i: f"{graph.node(i).label} @ {graph.node(i).position} ({i})")
node, detail = graph.node(focus), result.details.get(focus, {})
if "attention" in detail:
    st.altair_chart(attention_chart(result, focus), width="stretch")
elif "lens" in detail:
    st.write("The lens's top tokens here: " + ", ".join(f"`{t!r}` {p:.3f}" for t, p in detail["lens"]))
elif "promoted" in detail:
    st.write(f"{node.label}, activation {node.activation:.3g}, promotes: "
             + ", ".join(f"`{t!r}`" for t in detail["promoted"]))
folders = graph.info.get("transcoder_folders") or []
if node.kind == "feature" and folders and st.button(
        "Top contexts of this feature", help="the Features page's card of this transcoder feature: its top-activating "
        "contexts in the shipped corpora (the first feature of a layer takes about half a minute: the layer's cards "
        "are computed once and kept)"):
    card = run_analysis(Inputs(PAGE, "card", label="Feature card", scope=result), "features.explain",
                        lambda h, s, p: explain.run(h, s),
                        explain.Settings(dictionary=folders[node.layer], feature=node.feature),
                        auto=True, store=False, row=False)
    if card is not None:
        st.dataframe(pd.DataFrame([vars(c) for c in card.contexts]), width="stretch", hide_index=True)
incoming = sorted(graph.incoming(focus), key=lambda e: -abs(e.weight))[:8]
if incoming:
    st.caption("Strongest inputs: " + ", ".join(f"{graph.node(e.source).label}@{graph.node(e.source).position} "
                                                 f"({e.weight:+.3f})" for e in incoming))

# -- check by intervention ------------------------------------------------------------------------------------
st.header("Check by intervention")
st.markdown("The pinned nodes are ablated (zeroed) or patched from the corrupted prompt in the model itself, "
            "and in the graph's own frozen model (patterns and norm scales frozen; for routes, every other MLP "
            "frozen too; for attribution graphs, the other features recomputed by their transcoders). The logit "
            "difference is logit(target) − logit(the clean runner-up).")
if not pinned:
    st.info("Pin nodes (click them in the graph, or choose them above), then press **Check the pinned nodes**.")
    st.stop()
check_settings = CheckSettings(graph=result.settings, nodes=tuple(pinned), corrupt=corrupt if mode == "patch" else None)
done = run_analysis(check_inputs, "circuits-check", partial(run_check, result=result), check_settings,
                    button="Check the pinned nodes")
if done is not None:
    cols = st.columns(4)
    cols[0].metric("Clean logit difference", f"{done.clean_logit_diff:.3f}", f"vs {done.versus!r}",
                   delta_color="off", delta_arrow="off")
    cols[1].metric("Model, intervened", f"{done.new_logit_diff:.3f}", f"{done.new_logit_diff - done.clean_logit_diff:+.3f}")
    cols[2].metric("Graph's prediction", f"{done.predicted_logit_diff:.3f}",
                   f"{done.predicted_logit_diff - done.clean_logit_diff:+.3f}")
    cols[3].metric("New prediction", repr(done.new_top[0][0]), f"p = {done.new_top[0][1]:.3f}", delta_color="off",
                   delta_arrow="off")
    if done.skipped:
        st.caption(f"Not intervened on (logits): {', '.join(done.skipped)}.")
