"""Page: sequence continuation. Which attention heads continue 1 2 3 4 → 5?"""

import pandas as pd
import streamlit as st

from core.analyses.sequences import ABLATIONS, TASKS, SeqSettings, compare_circuits, find_circuit, inspect_head, run_sweep
from core.charts.sequences import (
    attention_heatmap, circuit_heatmap, head_heatmap, method_scatter, mlp_bars, successor_bars, to_png,
)
from ui.model import current_model, model_key, run_safely
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

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

handle = current_model()
METHOD_LABELS = {
    "auto": "exact ablation of every head when affordable, else attribution + exact checks",
    "both": "attribution for every head, then exact ablation of its top-k and k random others",
    "ablation": "exact ablation of every head and MLP",
    "attribution": "attribution patching only (fastest)",
}


def progress_bar():
    bar = st.progress(0.0, text="Starting…")
    return bar, (lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))


def download_png(column, label: str, chart, file_name: str, key: str) -> None:
    png = to_png(chart)
    if png is not None:
        column.download_button(label, png, file_name=file_name, mime="image/png", key=key)


# -- main run --------------------------------------------------------------------------------------------
with st.form("seq"):
    left, middle, right = st.columns(3)
    task = left.selectbox("Task", list(TASKS), format_func=lambda t: TASKS[t].title)
    template = middle.radio("Form", ["bare", "sentence"], horizontal=True,
                            format_func={"bare": "bare sequence", "sentence": "inside sentences"}.get)
    ablation = right.radio("Removed component's value", ABLATIONS, horizontal=True,
                           format_func={"mean": "mean (corrupted)", "zero": "zero", "resample": "resampled"}.get)
    method = left.selectbox("Method", list(METHOD_LABELS), format_func=METHOD_LABELS.get)
    n = middle.slider("Prompt pairs", 1, 32, 8)
    top_k = right.slider("Top-k confirmed exactly", 1, 32, 12,
                         help="when attribution picks the heads to confirm: its top-k, and k others drawn at random")
    length = left.slider("Members shown", 2, 8, 4)
    seed = middle.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1)
    first_token = right.checkbox("Score multi-token answers by their first token",
                                 help="for tokenizers that split numbers into digits (Gemma, Llama): 10 20 30 40 → '5'")
    with st.expander("Your own prompt pairs (replace the task)"):
        custom = st.text_area("One pair per line: clean | corrupted | correct answer | incorrect answer",
                              placeholder="1 2 3 4 | 7 2 9 4 | 5 | 4\n3 4 5 6 | 2 8 1 6 | 7 | 6", height=100)
    submitted = st.form_submit_button("Run", type="primary")

settings = SeqSettings(task=task, template=template, n=int(n), seed=int(seed), length=int(length),
                       first_token=first_token, custom=custom, ablation=ablation)
run_safely(settings.validate)
request = (model_key(), settings, method, int(top_k))
if submitted:
    bar, report = progress_bar()
    result = run_safely(run_sweep, handle, settings, method, int(top_k), report)
    bar.empty()
    st.session_state["seq_result"] = (request, result)

stored = st.session_state.get("seq_result")
if stored is None:
    st.info("Choose a task and press **Run**.")
    st.stop()
if stored[0] != request:
    st.caption("The settings changed since these results: press **Run** to update them.")
result = stored[1]
prompts, main = result.prompts, result.main

st.caption(f"Prompts: {prompts.summary()}; {prompts.n_tokens} tokens each.")
cols = st.columns(4)
cols[0].metric("Full logit difference", f"{main.full_logit_diff:.3f}")
cols[1].metric("Prompt pairs", main.n_prompts)
best = result.best_head()  # measured exactly wherever exact ablation ran
cols[2].metric("Most important head", best["component"], f"{best['pct_of_full']:.0f}% of full left", delta_color="off", delta_arrow="off")
if result.spearman_heads is not None:
    cols[3].metric("Spearman ρ (heads)", f"{result.spearman_heads:.2f}",
                   help="Spearman ρ between attribution estimates and exact ablation, over every head measured "
                        "exactly")
if result.method == "both" and result.exact_estimate_s is not None:
    unconfirmed = result.unconfirmed_heads
    if unconfirmed:
        st.warning(f"Exact ablation of every head would take about {result.exact_estimate_s:.0f} s here, so "
                   f"attribution patching ranked the heads and exact ablation checked {len(result.exact.heads)} of "
                   f"them (its top-{top_k} and as many at random). **{len(unconfirmed)} heads are estimates only**, "
                   f"and attribution misses saturated heads: " + ", ".join(unconfirmed[:12])
                   + (" …" if len(unconfirmed) > 12 else ""))
    else:
        st.caption(f"Every head and MLP was ablated exactly (estimated {result.exact_estimate_s:.0f} s on this "
                   "model); attribution patching is shown beside it for comparison.")
with st.expander("The prompts"):
    st.dataframe(prompts.frame().round(3), width="stretch", hide_index=True)

sweeps = [main] + [s for s in (result.exact, result.attribution) if s is not None and s is not main]
tabs = st.tabs([("Exact ablation" if s.method == "ablation" else "Attribution patching")
                + (f" ({len(s.heads)} heads)" if len(s.heads) < handle.n_layers * handle.n_heads else "") for s in sweeps])
for tab, sweep in zip(tabs, sweeps):
    with tab:
        label = "exact" if sweep.method == "ablation" else "attribution estimate"
        heat = head_heatmap(sweep.heads, f"Without each head ({label})")
        st.caption(f"Colour and number: % of the full logit difference left when the head's output takes its "
                   f"{sweep.ablation}-ablation value ({label}); hover a cell for the values.")
        left, right = st.columns([3, 2])
        left.altair_chart(heat, width="stretch")
        right.altair_chart(mlp_bars(sweep.mlps, "Without each MLP"), width="stretch")
        st.dataframe(sweep.ranked().round(3), width="stretch", hide_index=True, height=320)
        c1, c2, c3 = st.columns(3)
        c1.download_button("Heads and MLPs (CSV)", sweep.ranked().to_csv(index=False).encode("utf-8"),
                           file_name=f"seq_{sweep.task}_{sweep.method}.csv", mime="text/csv", key=f"csv_{sweep.method}")
        c2.download_button("Prompts (CSV)", prompts.frame().to_csv(index=False).encode("utf-8"),
                           file_name=f"seq_{sweep.task}_prompts.csv", mime="text/csv", key=f"prompts_{sweep.method}")
        download_png(c3, "Heatmap (PNG)", heat, f"seq_{sweep.task}_{sweep.method}.png", f"png_{sweep.method}")

comparison = result.comparison()
if len(comparison):
    st.subheader("Attribution patching vs exact ablation")
    st.altair_chart(method_scatter(comparison, result.spearman_heads), width="stretch")
    st.caption("Attribution is a first-order estimate from one forward/backward pair: it is cheap on big models, "
               "but misses saturating effects. Confirm the heads it ranks highest exactly.")

# -- circuit search --------------------------------------------------------------------------------------
st.header("Circuit search")
st.markdown("Iterative pruning: from the last layer to the first, remove a component for good when the logit "
            "difference (with everything removed so far) stays above (100 − threshold)% of the full model's; "
            "repeat until nothing changes. Optionally compare with a second task's circuit.")
with st.form("circuit"):
    left, middle, right = st.columns(3)
    threshold = left.slider("Threshold (% of the metric that may be lost)", 1, 60, 20)
    include_mlps = middle.checkbox("Prune MLPs too", value=False)
    other = right.selectbox("Compare with task", ["(none)"] + [t for t in TASKS], format_func=lambda t: TASKS[t].title if t in TASKS else t)
    find = st.form_submit_button("Find the circuit")
circuit_request = (request[:2], threshold, include_mlps, other)
if find:
    bar, report = progress_bar()
    if other == "(none)":
        found = run_safely(find_circuit, handle, settings, float(threshold), include_mlps, report)
    else:
        found = run_safely(compare_circuits, handle, settings, other, float(threshold), include_mlps, report)
    bar.empty()
    st.session_state["seq_circuit"] = (circuit_request, found)
stored_circuit = st.session_state.get("seq_circuit")
if stored_circuit is not None:
    if stored_circuit[0] != circuit_request:
        st.caption("The settings changed since this circuit was found: press **Find the circuit** to update it.")
    found = stored_circuit[1]
    circuits = [found] if hasattr(found, "heads") else [found.a, found.b]
    first = circuits[0].frame(handle.n_layers, handle.n_heads)
    if len(circuits) == 1:
        first["membership"] = first["in_circuit"].map({True: "in circuit", False: "no"})
    else:
        second = circuits[1].frame(handle.n_layers, handle.n_heads)["in_circuit"]
        first["membership"] = [("both" if a and b else "first task" if a else "second task" if b else "no")
                               for a, b in zip(first["in_circuit"], second)]
    cols = st.columns(len(circuits) + (1 if len(circuits) == 2 else 0))
    for col, circuit in zip(cols, circuits):
        col.metric(f"{circuit.task}: heads in circuit", len(circuit.heads),
                   f"{circuit.pct_of_full:.0f}% of the full logit difference", delta_color="off", delta_arrow="off")
    if len(circuits) == 2:
        cols[2].metric("Shared components", len(found.shared), f"Jaccard {found.jaccard:.2f}", delta_color="off", delta_arrow="off")
        st.caption(f"Shared: {', '.join(found.shared) or 'none'} · only {found.a.task}: {', '.join(found.only_a) or 'none'}"
                   f" · only {found.b.task}: {', '.join(found.only_b) or 'none'}")
    chart = circuit_heatmap(first, "Heads in the circuit" + ("s" if len(circuits) == 2 else ""))
    st.columns([3, 2])[0].altair_chart(chart, width="stretch")
    st.caption("Circuit: " + "; ".join(f"{c.task}: {', '.join(x.label for x in c.heads)}"
                                        + (f" + {len(c.mlps)} MLPs" if c.mlps else "") for c in circuits))
    steps = pd.concat([c.steps.assign(task=c.task) for c in circuits], ignore_index=True)
    with st.expander("Every pruning decision"):
        st.dataframe(steps.round(3), width="stretch", hide_index=True)
    c1, c2 = st.columns(2)
    c1.download_button("Circuit heads (CSV)", first.to_csv(index=False).encode("utf-8"), file_name="seq_circuit.csv",
                       mime="text/csv", key="circuit_csv")
    download_png(c2, "Circuit (PNG)", chart, "seq_circuit.png", "circuit_png")

# -- head inspector --------------------------------------------------------------------------------------
st.header("Head inspector")
st.markdown("The attention pattern of one head on a prompt, and its **successor score**: over ordered token sets "
            "(numbers, number words, ordinals, weekdays, months, letters), the fraction of tokens whose successor "
            "gets the highest logit among the set when the token's embedding, after the first MLP, goes through "
            "the head's OV circuit and the unembedding.")
with st.form("inspect"):
    left, middle, right = st.columns([1, 1, 3])
    layer = left.number_input("Layer", 0, handle.n_layers - 1, int(best["layer"]) if best["head"] >= 0 else 0)
    head = middle.number_input("Head", 0, handle.n_heads - 1, int(best["head"]) if best["head"] >= 0 else 0)
    text = right.text_input("Prompt", value=prompts.pairs[0].clean)
    inspect = st.form_submit_button("Inspect the head")
inspect_request = (model_key(), int(layer), int(head), text)
if inspect:
    bar, report = progress_bar()
    inspection = run_safely(inspect_head, handle, text, int(layer), int(head), None, report)
    bar.empty()
    st.session_state["seq_inspection"] = (inspect_request, inspection)
stored_inspection = st.session_state.get("seq_inspection")
if stored_inspection is not None:
    inspection = stored_inspection[1]
    name = f"L{inspection.layer}H{inspection.head}"
    pattern_chart = attention_heatmap(inspection.pattern_frame(), f"Attention of {name}")
    st.altair_chart(pattern_chart, width="stretch")
    left, right = st.columns([2, 3])
    left.altair_chart(successor_bars(inspection.successor, f"Successor score of {name}"), width="stretch")
    right.caption("Best successor heads of this model (mean over token sets):")
    right.dataframe(inspection.ranking.head(10).round(3), width="stretch", hide_index=True)
    c1, c2 = st.columns(2)
    c1.download_button("Successor scores of every head (CSV)", inspection.ranking.to_csv(index=False).encode("utf-8"),
                       file_name="seq_successor_scores.csv", mime="text/csv", key="succ_csv")
    download_png(c2, "Attention pattern (PNG)", pattern_chart, f"seq_attention_{name}.png", "att_png")
