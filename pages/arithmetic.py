"""Page: numerals and arithmetic. Is maths also a language?"""

from dataclasses import replace

import streamlit as st

from core.analyses import arithmetic
from core.analyses.arithmetic.analysis import drill_down
from core.analyses.arithmetic.charts import CATEGORY_LABELS, accuracy_bars, layer_probability_chart, topk_grid
from core.analyses.arithmetic.numerals import SYSTEM_KEYS, SYSTEMS, format_number
from core.analyses.arithmetic.problems import OP_LABELS, OPS, SURROUNDS, generate_problems, render_prompt
from core.charts import lens_heatmap, lens_heatmap_frame
from ui.links import Inputs
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE = "arithmetic"
st.title("🧮 Numerals and arithmetic")
st.markdown(
    "When a model solves `७+५=` (Devanagari digits), Tamil or Eastern Arabic digits, or the same sum in "
    "English or Hindi **words**, does it translate to Western digits internally, compute there and translate "
    "back, and is it as accurate as with `7+5=`? The same seeded few-shot problems are written in every "
    "numeral system: greedy decoding of the whole answer gives the accuracy per system; the logit lens at "
    "the answer position shows, layer by layer, how much probability goes to the answer's first digit written "
    "in each system."
)

# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Numerals and arithmetic")
with main.form("Run"):
    op = main.selectbox("Operation", OPS, "add", "op",
                        format_func=lambda o: f"{OP_LABELS[o]} (a, a+1, a+2 → a+3)" if o == "next" else OP_LABELS[o])
    lo = main.number_input("Smallest operand", 0, 999_999, 1, "lo", step=1)
    hi = main.number_input("Largest operand", 0, 999_999, 9, "hi", step=1)
    n = main.slider("Problems", 1, 200, 8, "n", help="the same problems for every numeral system")
    shots = main.slider("Solved examples per prompt (shots)", 0, 8, 4, "shots")
    systems = main.multiselect("Numeral systems to score", SYSTEM_KEYS, SYSTEM_KEYS, "systems",
                               format_func=lambda k: SYSTEMS[k].label)
    lens_numerals = main.selectbox("Layerwise view: problems written in", SYSTEM_KEYS, "devanagari", "lens_numerals",
                                   format_func=lambda k: SYSTEMS[k].label)
    with st.expander("More options"):
        surround = main.radio("Surrounding text", SURROUNDS, "none", "surround", horizontal=True,
                              format_func={"none": "none", "english": "English", "hindi": "Hindi"}.get)
        seed = main.number_input("Seed", 0, 2**31 - 1, 0, "seed", step=1)
        reader = main.radio("Lens", ["logit", "tuned"], "logit", "lens", horizontal=True,
                            help="tuned: this model's tuned lens (train one on the Logit lens page)")

settings = arithmetic.Settings(op=op, lo=int(lo), hi=int(hi), n=int(n), shots=int(shots), seed=int(seed),
                               surround=surround, systems=tuple(systems), lens_numerals=lens_numerals, lens=reader)
main.checked(settings.validate_problems)
example = generate_problems(replace(settings, n=1))[0]
with st.expander("What a prompt looks like"):
    st.code(render_prompt(example, lens_numerals, surround) + format_number(example.answer, lens_numerals), language=None)

if main.submitted and not systems:
    st.warning("Choose at least one numeral system to score.")
    st.stop()
result = run_analysis(main, "arithmetic", arithmetic.run, settings)
if result is None:
    st.info("Choose the problems in the sidebar and press **Run**.")
    st.stop()
accuracy, profile = result.accuracy, result.profile
frames = result.frames()

# -- accuracy -----------------------------------------------------------------------------------------------
st.subheader("Accuracy per numeral system")
bars = accuracy_bars(frames["accuracy"])
st.altair_chart(bars, width="stretch")
table = frames["accuracy"][["label", "n", "correct", "accuracy", "ci_low", "ci_high", "value_accuracy"]].rename(
    columns={"label": "numeral system", "accuracy": "exact accuracy", "ci_low": "95% low", "ci_high": "95% high",
             "value_accuracy": "right number, any system"}
)
st.dataframe(table.round(3), width="stretch", hide_index=True)
st.caption("Exact: the greedy answer (up to the line's end) reads as the right number in the prompt's own "
           "system after normalisation. The light bars also count the right number written in another system.")
with st.expander("Every problem and the model's answer"):
    st.dataframe(frames["answers"], width="stretch", hide_index=True, height=300)

# -- the layerwise view -------------------------------------------------------------------------------------
st.subheader(f"Where is the answer, layer by layer? (problems in {SYSTEMS[profile.numerals].label})")
curves = layer_probability_chart(profile.frame(), profile.first_correct_layer, profile.numerals)
st.altair_chart(curves, width="stretch")
first = profile.first_correct_layer
reached = sum(x is not None for x in profile.first_top1_layers)
st.caption(
    f"Mean over {len(profile.problems)} problems, band = mean ± 1.96·σ/√n. "
    + (f"The correct answer becomes the lens's top-1 token at layer {first} (median over the {reached} problems "
       f"where it ever is top-1)." if first is not None else "The correct answer is never the lens's top-1 token.")
    + (" Systems whose first digit is split into byte tokens by this tokenizer are scored by teacher-forcing "
       "those bytes." if profile.chained.any() else "")
)
layer_table = profile.frame().pivot(index="layer", columns="label", values="mean").join(
    profile.top1_rate().set_index("layer")
)

# -- one problem in detail (a view of the result: computed when chosen, kept in the server's memory) ---------
st.subheader("One problem in detail")
queries = frames["problems"]
drill = Inputs(PAGE, "problem", label="Arithmetic drill-down", scope=result)
choice = drill.selectbox(
    "Problem", list(queries["problem"]), int(queries["problem"].iloc[0]), "problem",
    format_func=lambda i: f"{i}: {queries.loc[i, 'query']}{queries.loc[i, 'expected']}  ·  output top-1 “{queries.loc[i, 'final_top1']}”",
)
detail = run_analysis(drill, "arithmetic.problem", lambda h, s, p: drill_down(h, result, s[1]),
                      (result.settings, int(choice)), auto=True, store=False, row=False)
if detail is None:
    st.stop()
top = detail.top_frame()
grid = topk_grid(top)
st.altair_chart(grid, width="stretch")
heatmap_frame = lens_heatmap_frame(detail.lens)
heatmap = lens_heatmap(heatmap_frame, max(detail.lens.layers)).properties(
    title="Lens over the query line (top-1 per layer and position)")
st.altair_chart(heatmap, width="stretch")
st.caption("Colours: " + ", ".join(CATEGORY_LABELS[k] for k in dict.fromkeys(top["system"])) + ". "
           "Faded cells have low probability.")

# -- export -------------------------------------------------------------------------------------------------
st.subheader("Export")
st.caption("Accuracy per system; every problem's answer; the layer profile (with the top-1 rate per layer); "
           "this problem's top-k and its heatmap. Tables as CSV, charts as PNG and SVG.")
columns = st.columns(5)
for column, title in zip(columns, ("Accuracy", "Answers per problem", "Layer profile", "Drill-down top-k",
                                   "Drill-down heatmap")):
    column.markdown(f"**{title}**")
downloads(columns[0], "arith_accuracy", frame=frames["accuracy"], chart=bars)
downloads(columns[1], "arith_answers", frame=frames["answers"])
downloads(columns[2], f"arith_layers_{profile.numerals}", frame=frames["layers"], chart=curves)
downloads(columns[3], f"arith_problem_{choice}", frame=top, chart=grid)
downloads(columns[4], f"arith_problem_{choice}_heatmap", frame=heatmap_frame, chart=heatmap)
with st.expander("Layer profile as a table"):
    st.dataframe(layer_table.round(4), width="stretch")
