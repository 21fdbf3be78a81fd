"""Page: numerals and arithmetic. Is maths also a language?"""

from dataclasses import replace

import streamlit as st

from core.analyses.arithmetic import (
    OP_LABELS, OPS, SURROUNDS, ArithmeticSettings, drill_down, generate_problems, render_prompt, run_arithmetic,
)
from core.charts import lens_heatmap, lens_heatmap_frame
from core.charts.arithmetic import CATEGORY_LABELS, accuracy_bars, layer_probability_chart, to_png, topk_grid
from core.numerals import SYSTEM_KEYS, SYSTEMS, format_number
from ui.model import current_model, model_key, run_safely
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("🧮 Numerals and arithmetic")
st.markdown(
    "When a model solves `७+५=` (Devanagari digits), Tamil or Eastern Arabic digits, or the same sum in "
    "English or Hindi **words**, does it translate to Western digits internally, compute there and translate "
    "back, and is it as accurate as with `7+5=`? The same seeded few-shot problems are written in every "
    "numeral system: greedy decoding of the whole answer gives the accuracy per system; the logit lens at "
    "the answer position shows, layer by layer, how much probability goes to the answer's first digit written "
    "in each system."
)

handle = current_model()

with st.form("arith"):
    left, middle, right = st.columns(3)
    op = left.selectbox("Operation", OPS, format_func=lambda o: f"{OP_LABELS[o]} (a, a+1, a+2 → a+3)" if o == "next" else OP_LABELS[o])
    lo = middle.number_input("Smallest operand", min_value=0, max_value=999_999, value=1, step=1)
    hi = right.number_input("Largest operand", min_value=0, max_value=999_999, value=9, step=1)
    n = left.slider("Problems", 1, 200, 8, help="the same problems for every numeral system")
    shots = middle.slider("Solved examples per prompt (shots)", 0, 8, 4)
    seed = right.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1)
    surround = left.radio("Surrounding text", SURROUNDS, horizontal=True,
                          format_func={"none": "none", "english": "English", "hindi": "Hindi"}.get)
    systems = middle.multiselect("Numeral systems to score", SYSTEM_KEYS, default=list(SYSTEM_KEYS),
                                 format_func=lambda k: SYSTEMS[k].label)
    lens_numerals = right.selectbox("Layerwise view: problems written in", SYSTEM_KEYS, index=SYSTEM_KEYS.index("devanagari"),
                                    format_func=lambda k: SYSTEMS[k].label)
    submitted = st.form_submit_button("Run", type="primary")

settings = ArithmeticSettings(op=op, lo=int(lo), hi=int(hi), n=int(n), shots=int(shots), seed=int(seed), surround=surround)
run_safely(settings.validate)
example = generate_problems(replace(settings, n=1))[0]
with st.expander("What a prompt looks like"):
    st.code(render_prompt(example, lens_numerals, surround) + format_number(example.answer, lens_numerals), language=None)

request = (model_key(), settings, tuple(systems), lens_numerals)
if submitted:
    if not systems:
        st.warning("Choose at least one numeral system to score.")
        st.stop()
    bar = st.progress(0.0, text="Starting…")
    report = run_safely(run_arithmetic, handle, settings, systems, lens_numerals,
                        progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
    bar.empty()
    st.session_state["arith_result"] = (request, report)

stored = st.session_state.get("arith_result")
if stored is None:
    st.info("Choose the problems and press **Run**.")
    st.stop()
if stored[0] != request:
    st.caption("The settings changed since these results: press **Run** to update them.")
report = stored[1]
accuracy, profile = report.accuracy, report.profile

# -- accuracy ---------------------------------------------------------------------------------------
st.subheader("Accuracy per numeral system")
bars = accuracy_bars(accuracy.frame)
st.altair_chart(bars, width="stretch")
table = accuracy.frame[["label", "n", "correct", "accuracy", "ci_low", "ci_high", "value_accuracy"]].rename(
    columns={"label": "numeral system", "accuracy": "exact accuracy", "ci_low": "95% low", "ci_high": "95% high",
             "value_accuracy": "right number, any system"}
)
st.dataframe(table.round(3), width="stretch", hide_index=True)
st.caption("Exact: the greedy answer (up to the line's end) reads as the right number in the prompt's own "
           "system after normalisation. The light bars also count the right number written in another system.")
with st.expander("Every problem and the model's answer"):
    st.dataframe(accuracy.outcomes, width="stretch", hide_index=True, height=300)

# -- the layerwise view -------------------------------------------------------------------------------
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

# -- one problem in detail --------------------------------------------------------------------------
st.subheader("One problem in detail")
queries = profile.problems_frame()
choice = st.selectbox(
    "Problem",
    list(queries["problem"]),
    format_func=lambda i: f"{i}: {queries.loc[i, 'query']}{queries.loc[i, 'expected']}  ·  output top-1 “{queries.loc[i, 'final_top1']}”",
)


@st.cache_data(show_spinner=False, max_entries=32)
def drill_of(key: str, settings: ArithmeticSettings, index: int, numerals: str, _handle):
    return drill_down(_handle, generate_problems(settings)[index], numerals, settings.surround)


with st.spinner("Lens over the query line…"):
    detail = run_safely(drill_of, model_key(), accuracy.settings, int(choice), profile.numerals, handle)
top = detail.top_frame()
st.altair_chart(topk_grid(top), width="stretch")
st.altair_chart(lens_heatmap(lens_heatmap_frame(detail.lens), handle.n_layers).properties(
    title="Lens over the query line (top-1 per layer and position)"), width="stretch")
st.caption("Colours: " + ", ".join(CATEGORY_LABELS[k] for k in dict.fromkeys(top["system"])) + ". "
           "Faded cells have low probability.")

# -- export ------------------------------------------------------------------------------------------
st.subheader("Export")
columns = st.columns(4)
columns[0].download_button("Accuracy (CSV)", accuracy.frame.to_csv(index=False).encode("utf-8"),
                           file_name="arith_accuracy.csv", mime="text/csv")
columns[1].download_button("Answers per problem (CSV)", accuracy.outcomes.to_csv(index=False).encode("utf-8"),
                           file_name="arith_answers.csv", mime="text/csv")
columns[2].download_button("Layer profile (CSV)", profile.frame().merge(profile.top1_rate(), on="layer").to_csv(index=False).encode("utf-8"),
                           file_name=f"arith_layers_{profile.numerals}.csv", mime="text/csv")
columns[3].download_button("Drill-down top-k (CSV)", top.to_csv(index=False).encode("utf-8"),
                           file_name=f"arith_problem_{choice}.csv", mime="text/csv")


@st.cache_data(show_spinner=False, max_entries=16)
def png_of(spec: str) -> bytes | None:
    return to_png(spec)


png_bars, png_curves = png_of(bars.to_json()), png_of(curves.to_json())
if png_bars is not None:
    columns = st.columns(4)
    columns[0].download_button("Accuracy chart (PNG)", png_bars, file_name="arith_accuracy.png", mime="image/png")
    columns[1].download_button("Layer chart (PNG)", png_curves, file_name=f"arith_layers_{profile.numerals}.png",
                               mime="image/png")
with st.expander("Layer profile as a table"):
    st.dataframe(layer_table.round(4), width="stretch")
