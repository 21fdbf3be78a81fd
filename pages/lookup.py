"""Page: key–value lookup. Does the model work like a hash map, in its context and in its weights?"""

import streamlit as st

from core.analyses import lookup
from core.analyses.lookup import facts
from core.analyses.lookup.charts import (
    ablation_chart, capacity_chart, group_chart, head_heatmap, layer_chart, position_chart, trace_heatmap,
)
from core.analyses.lookup.incontext import LIST_TITLES
from core.analyses.lookup.tracing import KINDS
from ui.links import Inputs
from ui.model import model_info
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE = "lookup"
st.title("🗝️ Key–value lookup")
st.markdown(
    "Does the model work like a **hash map**? *In context*: a prompt lists K `key: value` pairs, then asks for one "
    "key; how does accuracy fall as K grows, and with the queried pair's position, a shared value or a misspelt "
    "key? The logit lens at the answer position shows the layer where the value appears, and the heads that "
    "attend from there to the queried pair are confirmed by ablating them. *In the weights*: subject → attribute "
    "facts, zero-shot; **causal tracing** (Meng et al. 2022) corrupts the subject's embeddings with noise and "
    "restores one state at a time to find where the fact is recalled (for GPT-2 XL: mid-layer MLPs at the last "
    "subject token), and the most active MLP neurons there are read as key–value memories (Geva et al. 2021)."
)

# -- inputs (sidebar): the kind of lookup, then its own form --------------------------------------------------
TASKS = {"incontext": "In context (K pairs, then a query)", "facts": "Facts (in the weights)"}
main = Inputs(PAGE, label="Key–value lookup")
with st.sidebar:
    task = main.radio("Lookup", list(TASKS), "incontext", "task", format_func=TASKS.get)
section = Inputs(PAGE, task, label="Key–value lookup")

if task == "incontext":
    with section.form("Run"):
        lists = section.selectbox("Pairs", list(LIST_TITLES), list(LIST_TITLES)[0], "lists", format_func=LIST_TITLES.get)
        pairs = section.multiselect("K values (pairs per prompt)", [1, 2, 4, 8, 16, 32, 64], [2, 4, 8], "pairs",
                                    help="the largest K is where the conditions, the lens and the heads are measured")
        n = section.slider("Prompts per K and condition", 1, 50, 4, "n")
        perturb = section.checkbox("Also collisions (two keys share a value) and typos in the query key", True, "perturb")
        with st.expander("More options"):
            top_heads = section.slider("Heads to confirm by ablation", 0, 16, 4, "top_heads")
            ablation = section.radio("Ablated head's value", ["mean", "zero"], "mean", "ablation", horizontal=True,
                                     format_func={"mean": "mean over prompts", "zero": "zero"}.get)
            seed = section.number_input("Seed", 0, 2**31 - 1, 0, "seed")
    settings = lookup.Settings(task="incontext", n=int(n), seed=int(seed), pairs=tuple(sorted(pairs)), lists=lists,
                               perturb=perturb, top_heads=int(top_heads), ablation=ablation)
    if not pairs:
        st.warning("Choose at least one K value.")
        st.stop()
else:
    info = model_info()  # the layers a window may span, known without waiting for the model when it was loaded here
    with section.form("Run"):
        upload = section.upload("Your own facts (optional): a CSV with columns prompt,answer (and subject, to trace "
                                "them)", ["csv", "txt"], "upload")
        n = section.number_input("Facts (first N; 0 = all)", 0, 5000, 20, "n")
        trace_fact = section.number_input("Fact to trace (row, from 0; -1 = the first one the model gets right)",
                                          -1, 4999, -1, "trace")
        with st.expander("More options"):
            shots = section.number_input("Solved facts before each prompt (few-shot)", 0, 16, 0, "shots")
            noise = section.slider("Noise (× the embeddings' std)", 0.0, 10.0, 3.0, "noise", step=0.5)
            window = section.slider("Layers restored together (MLP / attention)", 1, int(info["n_layers"]) if info else 64,
                                    1, "window")
            kinds = section.multiselect("Restore", list(KINDS), list(KINDS), "kinds")
            neurons = section.slider("MLP neurons per layer", 0, 20, 5, "neurons")
            top_heads = section.slider("Heads to confirm by ablation", 0, 16, 4, "top_heads")
            seed = section.number_input("Seed", 0, 2**31 - 1, 0, "seed")
    settings = lookup.Settings(task="facts", n=int(n), seed=int(seed), facts_csv=upload.data if upload else None,
                               shots=int(shots), trace_fact=int(trace_fact), noise=float(noise), window=int(window),
                               kinds=tuple(kinds), neurons=int(neurons), top_heads=int(top_heads))

result = run_analysis(section, "lookup", lookup.run, settings)
if result is None:
    if task == "incontext":
        st.info("Choose the settings and press **Run**.")
    else:
        shipped = facts.shipped()
        st.info(f"The shipped list (assets/facts.csv) has {len(shipped)} facts in {len({f.relation for f in shipped})} "
                f"relations and {len({f.language for f in shipped})} languages. Press **Run**.")
    st.stop()

frames = result.frames()
for note in result.notes:
    st.info(note)
heads = result.heads
a, b, c = st.columns(3)
main_label = f"Accuracy at K = {result.settings.main_k}" if task == "incontext" else "Accuracy (zero-shot greedy)" \
    if result.settings.shots == 0 else f"Accuracy ({result.settings.shots}-shot)"
a.metric(main_label, f"{result.accuracy:.0%}", f"{int(result.main.sum())} prompts", delta_color="off")
first = result.first_correct_layer
b.metric("Answer top-1 from layer", "never" if first is None else str(first),
         f"median; of {result.n_layers}", delta_color="off")
if not heads.table.empty:
    strongest = heads.table.sort_values("pct_of_full").iloc[0]
    c.metric("Strongest confirmed head", strongest["component"],
             f"{strongest['pct_of_full']:.0f}% of p(answer) left", delta_color="off")

layers_plot = layer_chart(frames["layers"], first)
name = f"lookup_{task}"
if task == "incontext":
    capacity = capacity_chart(frames["by_pairs"])
    positions = position_chart(frames["by_position"], result.settings.main_k)
    left, right = st.columns(2)
    left.altair_chart(capacity, width="stretch")
    right.altair_chart(positions, width="stretch")
    conditions = group_chart(frames["by_condition"], "condition",
                             f"Collisions and typos (K = {result.settings.main_k})")
    left, right = st.columns(2)
    left.altair_chart(conditions, width="stretch")
    right.altair_chart(layers_plot, width="stretch")
    st.subheader("Accuracy by K")
    st.dataframe(frames["by_pairs"], hide_index=True, width="stretch")
else:
    relations = group_chart(frames["by_relation"], "relation", "Accuracy by relation")
    left, right = st.columns(2)
    left.altair_chart(relations, width="stretch")
    right.altair_chart(layers_plot, width="stretch")

st.subheader("Retrieval heads")
st.caption(f"Attention read from {heads.attention_prompts} prompts; each outlined head ablated "
           f"({heads.ablation}) on all {int(result.main.sum())}: p(answer) as a % of the full model's "
           f"({heads.full_p:.3f}).")
heatmap = head_heatmap(frames["head_attention"], heads.table)
left, right = st.columns(2)
left.altair_chart(heatmap, width="stretch")
ablations = None
if not heads.table.empty:
    ablations = ablation_chart(heads.table, heads.together)
    right.altair_chart(ablations, width="stretch")
    st.dataframe(heads.table, hide_index=True, width="stretch")

traces = {}
if task == "facts" and result.trace is not None:
    t = result.trace
    st.subheader(f"Causal tracing: “{result.traced['prompt']}” → {result.traced['answer']}")
    st.caption(f"p(answer) clean {t.p_clean:.3f}, with noise ({t.noise_std:.3f} per dimension) on the subject "
               f"{t.p_corrupt:.3f}. Each cell: p with that state restored from the clean run, minus the corrupted p.")
    if t.effects:
        tabs = st.tabs([f"Restore {kind}" for kind in t.effects])
        for tab, kind in zip(tabs, t.effects):
            peak = t.peak(kind)
            traces[kind] = trace_heatmap(frames["trace"], kind, t.subject)
            tab.altair_chart(traces[kind], width="stretch")
            tab.caption(f"Peak: layer {peak['layer']}, position {peak['position']} ('{peak['token']}'), "
                        f"effect {peak['indirect_effect']:.3f}.")
    if result.neurons is not None:
        st.subheader("MLP neurons at the last subject token")
        st.caption("Per layer, the neurons whose contribution |activation| · ‖value vector‖ is largest, and the "
                   "tokens their value vector promotes through the unembedding.")
        st.dataframe(result.neurons, hide_index=True, width="stretch")

with st.expander("Every prompt"):
    st.dataframe(frames["prompts"], hide_index=True, width="stretch")

st.caption("Downloads: every prompt (CSV), the layer curve, the head attention and the charts (PNG, SVG).")
columns = st.columns(4)
downloads(columns[0], f"{name}_prompts", frame=frames["prompts"])
downloads(columns[1], f"{name}_layers", frame=frames["layers"], chart=layers_plot)
downloads(columns[2], f"{name}_heads", frame=frames["head_attention"], chart=heatmap)
if "trace" in frames:
    downloads(columns[3], f"{name}_trace", frame=frames["trace"], chart=next(iter(traces.values()), None))
elif ablations is not None:
    downloads(columns[3], f"{name}_ablations", frame=heads.table, chart=ablations)
