"""Page: sequence continuation. Which attention heads continue 1 2 3 4 → 5?"""

from dataclasses import replace

import pandas as pd
import streamlit as st

from core.analyses import sequences as sq
from core.analyses.sequences.charts import (
    attention_heatmap, circuit_heatmap, head_heatmap, method_scatter, mlp_bars, successor_bars,
)
from core.interventions import ABLATIONS
from ui.links import Inputs
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE = "sequences"
st.title("🔢 Sequence continuation")
st.markdown(
    "Which attention heads and MLPs make the model continue `1 2 3 4 ` with `5`, `March April May` with "
    "`June`? Each component is removed in turn (its output replaced by its mean over **corrupted** prompts "
    "whose members are random, by zero, or by a resampled corrupted prompt's) and the **logit difference** "
    "logit(correct) − logit(last member repeated) at the last position is measured again. Attribution "
    "patching estimates all of them from one forward and one backward pass; the circuit search prunes "
    "components while the metric stays within a threshold; the head inspector shows attention patterns "
    "and successor scores (Lan & Barez 2023; Gould et al. 2023)."
)

METHOD_LABELS = {
    "auto": "exact ablation of every head when affordable, else attribution + exact checks",
    "both": "attribution for every head, then exact ablation of its top-k and k random others",
    "ablation": "exact ablation of every head and MLP",
    "attribution": "attribution patching only (fastest)",
}

# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Sequence continuation")
with main.form("Run"):
    task = main.selectbox("Task", list(sq.TASKS), "numerals", "task", format_func=lambda t: sq.TASKS[t].title)
    template = main.radio("Form", ["bare", "sentence"], "bare", "form", horizontal=True,
                          format_func={"bare": "bare sequence", "sentence": "inside sentences"}.get)
    method = main.selectbox("Method", list(METHOD_LABELS), "auto", "method", format_func=METHOD_LABELS.get)
    n = main.slider("Prompt pairs", 1, 32, 8, "n")
    with st.expander("More options"):
        ablation = main.radio("Removed component's value", list(ABLATIONS), "mean", "ablation", horizontal=True,
                              format_func={"mean": "mean (corrupted)", "zero": "zero", "resample": "resampled"}.get)
        top_k = main.slider("Top-k confirmed exactly", 1, 32, 12, "top_k",
                            help="when attribution picks the heads to confirm: its top-k, and k others drawn at random")
        length = main.slider("Members shown", 2, 8, 4, "length")
        seed = main.number_input("Seed", 0, 2**31 - 1, 0, "seed", step=1)
        first_token = main.checkbox("Score multi-token answers by their first token", False, "first_token",
                                    help="for tokenizers that split numbers into digits (Gemma, Llama): 10 20 30 40 → '5'")
        custom = main.text_area("Your own prompt pairs (replace the task): one per line, clean | corrupted | "
                                "correct answer | incorrect answer", "", "custom",
                                placeholder="1 2 3 4 | 7 2 9 4 | 5 | 4\n3 4 5 6 | 2 8 1 6 | 7 | 6", height=100)

circuit = Inputs(PAGE, "circuit", label="Circuit search")
with circuit.form("Find the circuit", title="Circuit search", expanded=False):
    threshold = circuit.slider("Threshold (% of the metric that may be lost)", 1, 60, 20, "threshold")
    include_mlps = circuit.checkbox("Prune MLPs too", False, "mlps")
    other = circuit.selectbox("Compare with task", ["(none)"] + list(sq.TASKS), "(none)", "other",
                              format_func=lambda t: sq.TASKS[t].title if t in sq.TASKS else t)

inspector = Inputs(PAGE, "head", label="Head inspector")
with inspector.form("Inspect the head", title="Head inspector", expanded=False):
    layer = inspector.number_input("Layer (-1: the most important head's)", -1, 1023, -1, "layer")
    head = inspector.number_input("Head (-1: the most important head's)", -1, 1023, -1, "head")
    text = inspector.text_input("Prompt", "", "prompt", placeholder="the first clean prompt")

# -- main run -----------------------------------------------------------------------------------------------
settings = sq.Settings(task=task, template=template, n=int(n), seed=int(seed), length=int(length),
                       first_token=first_token, custom=custom, ablation=ablation, method=method, top_k=int(top_k))
result = run_analysis(main, "sequences", sq.run, settings)
if result is None:
    st.info("Choose a task in the sidebar and press **Run**.")
    st.stop()
sweeps, frames = result.sweeps, result.frames()
prompts, main_sweep = sweeps.prompts, sweeps.main
n_layers = int(main_sweep.heads["layer"].max()) + 1
n_heads = int(main_sweep.heads["head"].max()) + 1

st.caption(f"Prompts: {prompts.summary()}; {prompts.n_tokens} tokens each.")
cols = st.columns(4)
cols[0].metric("Full logit difference", f"{main_sweep.full_logit_diff:.3f}")
cols[1].metric("Prompt pairs", main_sweep.n_prompts)
best = sweeps.best_head()  # measured exactly wherever exact ablation ran
cols[2].metric("Most important head", best["component"], f"{best['pct_of_full']:.0f}% of full left", delta_color="off", delta_arrow="off")
if sweeps.spearman_heads is not None:
    cols[3].metric("Spearman ρ (heads)", f"{sweeps.spearman_heads:.2f}",
                   help="Spearman ρ between attribution estimates and exact ablation, over every head measured "
                        "exactly")
if sweeps.method == "both" and sweeps.exact_estimate_s is not None:
    unconfirmed = sweeps.unconfirmed_heads
    if unconfirmed:
        st.warning(f"Exact ablation of every head would take about {sweeps.exact_estimate_s:.0f} s here, so "
                   f"attribution patching ranked the heads and exact ablation checked {len(sweeps.exact.heads)} of "
                   f"them (its top-{result.settings.top_k} and as many at random). **{len(unconfirmed)} heads are "
                   f"estimates only**, and attribution misses saturated heads: " + ", ".join(unconfirmed[:12])
                   + (" …" if len(unconfirmed) > 12 else ""))
    else:
        st.caption(f"Every head and MLP was ablated exactly (estimated {sweeps.exact_estimate_s:.0f} s on this "
                   "model); attribution patching is shown beside it for comparison.")
with st.expander("The prompts"):
    st.dataframe(frames["prompts"].round(3), width="stretch", hide_index=True)

tabs_of = [main_sweep] + [s for s in (sweeps.exact, sweeps.attribution) if s is not None and s is not main_sweep]
tabs = st.tabs([("Exact ablation" if s.method == "ablation" else "Attribution patching")
                + (f" ({len(s.heads)} heads)" if len(s.heads) < n_layers * n_heads else "") for s in tabs_of])
for tab, sweep in zip(tabs, tabs_of):
    with tab:
        label = "exact" if sweep.method == "ablation" else "attribution estimate"
        heat = head_heatmap(sweep.heads, f"Without each head ({label})")
        bars = mlp_bars(sweep.mlps, "Without each MLP")
        st.caption(f"Colour and number: % of the full logit difference left when the head's output takes its "
                   f"{sweep.ablation}-ablation value ({label}); hover a cell for the values.")
        left, right = st.columns([3, 2])
        left.altair_chart(heat, width="stretch")
        right.altair_chart(bars, width="stretch")
        st.dataframe(frames[sweep.method].round(3), width="stretch", hide_index=True, height=320)
        st.caption("Downloads: heads and MLPs, largest drop first, and the prompts (CSV); the heatmap and the "
                   "MLP bars (PNG, SVG).")
        c1, c2, c3, c4 = st.columns(4)
        downloads(c1, f"seq_{sweep.task}_{sweep.method}", frame=frames[sweep.method])
        downloads(c2, f"seq_{sweep.task}_prompts", frame=frames["prompts"], key=f"seq_{sweep.task}_prompts_{sweep.method}")
        downloads(c3, f"seq_{sweep.task}_{sweep.method}_heads", chart=heat)
        downloads(c4, f"seq_{sweep.task}_{sweep.method}_mlps", chart=bars)

if "comparison" in frames:
    st.subheader("Attribution patching vs exact ablation")
    scatter = method_scatter(frames["comparison"], sweeps.spearman_heads)
    st.altair_chart(scatter, width="stretch")
    st.caption("Attribution is a first-order estimate from one forward/backward pair: it is cheap on big models, "
               "but misses saturating effects. Confirm the heads it ranks highest exactly.")
    downloads(st.columns(4)[0], f"seq_{main_sweep.task}_methods", frame=frames["comparison"], chart=scatter)

# -- circuit search -----------------------------------------------------------------------------------------
st.header("Circuit search")
st.markdown("Iterative pruning: from the last layer to the first, remove a component for good when the logit "
            "difference (with everything removed so far) stays above (100 − threshold)% of the full model's; "
            "repeat until nothing changes. Optionally compare with a second task's circuit.")
# The search depends on the prompts, not on how the main run ranked the heads (method, top-k).
prompt_settings = replace(settings, method=sq.Settings.method, top_k=sq.Settings.top_k)


def search(handle, request, progress):
    base, limit, mlps, second = request
    if second == "(none)":
        return sq.find_circuit(handle, base, float(limit), mlps, progress)
    return sq.compare_circuits(handle, base, second, float(limit), mlps, progress)


found = run_analysis(circuit, "sequences.circuit", search, (prompt_settings, int(threshold), bool(include_mlps), other),
                     button="Find the circuit")
if found is None:
    st.caption("Set the threshold under **Circuit search** in the sidebar and press **Find the circuit**.")
else:
    circuits = [found] if isinstance(found, sq.Circuit) else [found.a, found.b]
    heads_in = sq.membership(found, n_layers, n_heads)
    cols = st.columns(len(circuits) + (1 if len(circuits) == 2 else 0))
    for col, one in zip(cols, circuits):
        col.metric(f"{one.task}: heads in circuit", len(one.heads),
                   f"{one.pct_of_full:.0f}% of the full logit difference", delta_color="off", delta_arrow="off")
    if len(circuits) == 2:
        cols[2].metric("Shared components", len(found.shared), f"Jaccard {found.jaccard:.2f}", delta_color="off", delta_arrow="off")
        st.caption(f"Shared: {', '.join(found.shared) or 'none'} · only {found.a.task}: {', '.join(found.only_a) or 'none'}"
                   f" · only {found.b.task}: {', '.join(found.only_b) or 'none'}")
    chart = circuit_heatmap(heads_in, "Heads in the circuit" + ("s" if len(circuits) == 2 else ""))
    st.columns([3, 2])[0].altair_chart(chart, width="stretch")
    st.caption("Circuit: " + "; ".join(f"{c.task}: {', '.join(x.label for x in c.heads)}"
                                        + (f" + {len(c.mlps)} MLPs" if c.mlps else "") for c in circuits))
    steps = pd.concat([c.steps.assign(task=c.task) for c in circuits], ignore_index=True)
    with st.expander("Every pruning decision"):
        st.dataframe(steps.round(3), width="stretch", hide_index=True)
    c1, c2 = st.columns(2)
    downloads(c1, "seq_circuit", frame=heads_in, chart=chart)
    downloads(c2, "seq_circuit_steps", frame=steps)

# -- head inspector -----------------------------------------------------------------------------------------
st.header("Head inspector")
st.markdown("The attention pattern of one head on a prompt, and its **successor score**: over ordered token sets "
            "(numbers, number words, ordinals, weekdays, months, letters), the fraction of tokens whose successor "
            "gets the highest logit among the set when the token's embedding, after the first MLP, goes through "
            "the head's OV circuit and the unembedding.")
best_layer, best_head = (int(best["layer"]), int(best["head"])) if best["head"] >= 0 else (0, 0)
at = (best_layer if layer < 0 else int(layer), best_head if head < 0 else int(head), text or prompts.pairs[0].clean)
if not (0 <= at[0] < n_layers and 0 <= at[1] < n_heads):
    st.error(f"This model has layers 0–{n_layers - 1} and heads 0–{n_heads - 1}: choose a head among them "
             "(or -1 for the most important one).")
    st.stop()
inspection = run_analysis(inspector, "sequences.head", lambda h, s, p: sq.inspect_head(h, s[2], s[0], s[1], None, p),
                          at, button="Inspect the head")
if inspection is None:
    st.caption(f"Pick a head under **Head inspector** in the sidebar (by default the most important one, L{at[0]}H{at[1]}) "
               "and press **Inspect the head**.")
else:
    name = f"L{inspection.layer}H{inspection.head}"
    pattern = inspection.pattern_frame()
    pattern_chart = attention_heatmap(pattern, f"Attention of {name}")
    st.altair_chart(pattern_chart, width="stretch")
    left, right = st.columns([2, 3])
    successor_chart = successor_bars(inspection.successor, f"Successor score of {name}")
    left.altair_chart(successor_chart, width="stretch")
    right.caption("Best successor heads of this model (mean over token sets):")
    right.dataframe(inspection.ranking.head(10).round(3), width="stretch", hide_index=True)
    st.caption("Downloads: the attention pattern and this head's successor scores (CSV, PNG, SVG); the successor "
               "scores of every head (CSV).")
    c1, c2, c3 = st.columns(3)
    downloads(c1, f"seq_attention_{name}", frame=pattern, chart=pattern_chart)
    downloads(c2, f"seq_successor_{name}", frame=inspection.successor, chart=successor_chart)
    downloads(c3, "seq_successor_scores", frame=inspection.ranking)
