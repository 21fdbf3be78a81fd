"""Page: the logit lens (or a tuned lens) of any prompt, every layer, every position; direct logit
attribution; two prompts or two models side by side. Each is its own analysis, run through run_analysis."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.analyses import attribute, lens
from core.analyses import tuned_lens
from core.analyses.attribute.charts import heads_heatmap, layer_bars
from core.analyses.lens import compare
from core.analyses.lens.charts import COLOURS, comparison_chart, grid, grid_frame
from core.charts import layer_curves
from core.lenses import default_lens_dir
from core.tokens import visible
from ui.links import Inputs
from ui.model import chosen_model, current_model, model_choices, model_info, model_key, other_model, run_safely
from ui.results import downloads, run_analysis
from ui.shell import require_shell
from ui.training import tuned_lens_job

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE, THIS_MODEL = "logit_lens", "(this model)"
st.title("🔎 Logit lens")
st.markdown(
    "What does each layer *predict*? The residual stream after every layer is decoded through the model's "
    "own final norm and unembedding (layer 0 is the embeddings; the last layer is the model's real output). "
    "Each cell shows the top-1 next-token guess at that layer and position. The **tuned lens** (Belrose et al. "
    "2023) first passes each layer through an affine translator trained to match the final layer, which reads "
    "early layers far better; **sub-layer rows** show the residual after each attention and after each MLP."
)

# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Logit lens")
with main.form("Run the lens"):
    prompt = main.text_area("Prompt", "The Eiffel Tower is in the city of", "prompt", height=90)
    top_k = main.slider("Top-k tokens per layer", 1, 20, 5, "top_k")
    reader = main.radio("Lens", ["logit", "tuned"], "logit", "lens", horizontal=True,
                        help="tuned: per-layer translators trained for this model (train one on this page)")
    resolution = main.radio("Rows", ["layer", "sublayer"], "layer", "rows", horizontal=True,
                            format_func={"layer": "after each layer", "sublayer": "after attention and MLP"}.get)
    colour = main.selectbox("Colour the grid by", list(COLOURS), "top-1 probability", "colour")
    with st.expander("Track tokens"):
        track_text = main.text_input("Track tokens (comma-separated)", "", "track", placeholder='" Paris", Paris, London',
                                     help='With or without a leading space: " Paris" and "Paris" are different tokens. '
                                          "A word of several tokens is tracked by its first.")

attribution = Inputs(PAGE, "attribute", label="Direct logit attribution")
with attribution.form("Attribute", title="Direct logit attribution", expanded=False):
    target = attribution.text_input("Token", "", "target", placeholder="the output's top-1",
                                    help='e.g. " Paris" (leading space) or #1234 for an id; empty: the output\'s top-1')
    versus = attribution.text_input("Versus (optional)", "", "versus", help="attribute the logit difference token − versus")
    where = attribution.number_input("Position", -100_000, 100_000, -1, "position", help="-1: the last token")

side = Inputs(PAGE, "compare", label="Side by side")
with side.form("Compare", title="Side by side", expanded=False):
    prompt_b = side.text_input("Prompt B", "", "prompt_b", placeholder="the same prompt as A")
    others = [THIS_MODEL] + [m for m in model_choices() if m != chosen_model().spec]
    model_b = side.selectbox("Model B", others, THIS_MODEL, "model_b")

measure = Inputs(PAGE, "tuned_lens", label="Tuned lens measurement")
with measure.form("Measure both lenses", title="Tuned lens vs logit lens", expanded=False):
    st.caption("Mean KL to the model's output per layer on the held-out text, for both lenses (needs a tuned lens).")

# -- the lens -----------------------------------------------------------------------------------------------
track = tuple(t.strip().strip('"').strip("'") if t.strip().startswith(('"', "'")) else t.strip()
              for t in track_text.split(",") if t.strip())
if not prompt.strip():
    st.warning("The prompt is empty: type some text to look at.")
    st.stop()


def lens_folder() -> Path:
    """This model's tuned-lens folder, known without loading it when it was loaded here before."""
    info = model_info()
    return Path(info["lens_dir"]) if info and info.get("lens_dir") else default_lens_dir(current_model())


settings = lens.Settings(prompt=prompt, top_k=top_k, lens=reader, track=track, resolution=resolution)
main.checked(settings.validate)
if reader == "tuned" and not (lens_folder() / "config.json").is_file():
    handle = current_model()
    st.info(f"No tuned lens for {handle.spec} yet. Training one takes a few minutes on a CPU (4,096 tokens of "
            "shipped text, least squares then the KL objective); it is saved for everyone on this server.")
    job = tuned_lens_job(handle, model_key(), start=st.button("Train a tuned lens", type="primary"))
    if job is None:
        st.stop()
    bar = st.progress(job.fraction, text=job.message)
    while not job.wait(0.5):
        bar.progress(job.fraction, text=f"Training the tuned lens: {job.message} · {job.seconds:.0f} s")
    bar.empty()
    run_safely(job.result)

result = run_analysis(main, "lens", lens.run, settings, button="Run the lens", auto=True)
if result is None:
    st.stop()
for note in result.notes:
    st.caption(note)

tokens = result.tokens
view = Inputs(PAGE, "view", scope=result)
tracked = 0 if result.settings.track else None
if result.settings.track and len(result.settings.track) > 1:
    names = list(result.settings.track)
    tracked = names.index(view.selectbox("Tracked token shown in the grid", names, names[0], "tracked"))
if COLOURS[colour][0].startswith("tracked") and not result.settings.track:
    st.caption("No token tracked: the grid is coloured by the top-1 probability.")
    colour = "top-1 probability"
frame = grid_frame(result, tracked)
heatmap = grid(frame, colour, title=f"{result.settings.lens} lens · {result.settings.resolution} rows")
st.altair_chart(heatmap, width="stretch")

position = view.select_slider("Position to inspect", list(range(len(tokens))), len(tokens) - 1, "position",
                              format_func=lambda p: f"{p}: {visible(tokens[p])}")
view.sync()
detail = result.frames()["lens"]
at_position = detail[detail["position"] == position]
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Top-{result.settings.top_k} per layer after “{visible(tokens[position])}”")
    table = at_position.pivot(index="row", columns="rank", values="token").rename(columns=lambda r: f"#{r}")
    probs = at_position.pivot(index="row", columns="rank", values="prob").rename(columns=lambda r: f"p#{r}")
    combined = table.join(probs)[[c for pair in zip(table.columns, probs.columns) for c in pair]].map(
        lambda v: visible(v) if isinstance(v, str) else round(float(v), 3))
    combined.index = [result.lens.row_label(r) for r in combined.index]
    st.dataframe(combined.iloc[::-1], width="stretch", height=min(700, 36 * (len(combined) + 1)))
with right:
    curves = at_position[at_position["rank"] == 1][["row", "entropy_bits", "kl_to_final_bits"]].rename(columns={"row": "layer"})
    curve_chart = layer_curves(curves, ["entropy_bits", "kl_to_final_bits"], "Entropy and KL(final ‖ layer)", "bits")
    st.altair_chart(curve_chart, width="stretch")
    tracked_chart = None
    if result.settings.track:
        rows = result.frames()["tracked"]
        rows = rows[rows["position"] == position].pivot(index="row", columns="token", values="prob").reset_index()
        tracked_chart = layer_curves(rows.rename(columns={"row": "layer"}), list(result.settings.track),
                                     "Tracked tokens' probability", "probability", symlog=False)
        st.altair_chart(tracked_chart, width="stretch")

st.caption("Downloads: every row × position × top-k (CSV), and each chart (PNG, SVG).")
cols = st.columns(4)
downloads(cols[0], "logit_lens", frame=detail)
downloads(cols[1], "logit_lens_grid", chart=heatmap)
downloads(cols[2], "logit_lens_curves", chart=curve_chart)
if tracked_chart is not None:
    downloads(cols[3], "logit_lens_tracked", frame=result.frames()["tracked"], chart=tracked_chart)

# -- direct logit attribution ------------------------------------------------------------------------------
st.header("Direct logit attribution")
st.markdown("Which heads and MLPs *write* the prediction? With the final norm's scale frozen at its clean value, "
            "the last residual is a sum of the embeddings, every head's output, every MLP's output and biases; "
            "each term's dot product with a token's unembedding is its share of that token's logit (before any "
            "soft cap), and the shares add up to the logit exactly.")
top1 = result.lens.top_tokens[-1][0][-1][0]  # the output's top-1 at the last position, as the tokenizer writes it
attribution_settings = attribute.Settings(prompt=prompt, target=target or top1, versus=versus or None, position=int(where))
found = run_analysis(attribution, "attribute", attribute.run, attribution_settings, button="Attribute")
if found is None:
    st.caption("Choose a token under **Direct logit attribution** in the sidebar (the output's top-1 by default) and "
               "press **Attribute**.")
else:
    total = sum(c.value for c in found.components)
    st.metric("Logit" + (" difference" if found.versus else "") + " (pre-soft-cap)", f"{found.total:.3f}",
              f"components sum to {total:.3f}", delta_color="off", delta_arrow="off")
    left, right = st.columns([3, 2])
    heads_chart, bars_chart = heads_heatmap(found), layer_bars(found)
    left.altair_chart(heads_chart, width="stretch")
    right.altair_chart(bars_chart, width="stretch")
    components = found.frames()["components"].sort_values("value", key=abs, ascending=False)
    st.dataframe(components.round(4), width="stretch", hide_index=True, height=300)
    cols = st.columns(3)
    downloads(cols[0], "attribution", frame=components)
    downloads(cols[1], "attribution_heads", chart=heads_chart)
    downloads(cols[2], "attribution_layers", chart=bars_chart)

# -- side by side ------------------------------------------------------------------------------------------
st.header("Side by side")
st.markdown("A second prompt on this model, or this prompt on a second model: per layer, KL(A ‖ B) between the "
            "two lens distributions at the last position. Models of different depth are aligned by fraction of "
            "depth; models with different vocabularies are compared by their top-1 tokens only.")
second = None if model_b == THIS_MODEL else model_b
compare_settings = compare.Settings(prompt_a=prompt, prompt_b=prompt_b or prompt)
compare_run = compare.run if second is None else (lambda h, s, p: compare.run(h, s, p, other_model(second)))
compared = run_analysis(side, "compare", compare_run, compare_settings, button="Compare",
                        others={"model_b": second} if second else None)
if compared is None:
    st.caption("Write a prompt B or pick a model B under **Side by side** in the sidebar and press **Compare**.")
else:
    layers = compared.frames()["layers"]
    chart = comparison_chart(layers.fillna({"kl_bits": 0.0}), f"A: {compared.model_a} · B: {compared.model_b}")
    if compared.same_vocabulary:
        st.altair_chart(chart, width="stretch")
    else:
        st.caption("The two models have different vocabularies: no KL between them; their top-1 tokens per layer:")
    st.dataframe(layers.round(4), width="stretch", hide_index=True)
    cols = st.columns(2)
    downloads(cols[0], "side_by_side", frame=layers, chart=chart if compared.same_vocabulary else None)

with st.expander("Tuned lens: how it was trained, and how it compares"):
    st.markdown("Trained here with `python -m core tuned-lens` or this page (Lens: tuned), saved in the tuned-lens "
                "package's format (`config.json` + `params.pt`) under this server's LAYERSCOPE_HOME; published lenses "
                "in that format (e.g. Llama-2-7B's) load with `python -m core lens --lens tuned --lens-path DIR`. "
                "**Measure both lenses** (sidebar) evaluates them on the held-out text.")
    if measure.submitted and not (lens_folder() / "config.json").is_file():
        st.info("Train a tuned lens first (choose Lens: tuned and run the lens).")
    else:
        measured = run_analysis(measure, "tuned_lens", tuned_lens.run, tuned_lens.Settings(), button="Measure both lenses",
                                store=False)
        if measured is not None:
            st.dataframe(pd.DataFrame(measured.frames()["layers"]).round(4), width="stretch", hide_index=True)
