"""Page: the logit lens (or a tuned lens) of any prompt, every layer, every position; direct logit
attribution; two prompts or two models side by side."""

import pandas as pd
import streamlit as st

from core.analyses import attribute, lens
from core.analyses.attribute.charts import heads_heatmap, layer_bars
from core.analyses.lens import compare
from core.analyses.lens.charts import COLOURS, comparison_chart, grid, grid_frame
from core.analyses.tuned_lens import Settings as TunedSettings, run as train_tuned_lens
from core.charts import layer_curves
from core.lenses import default_lens_dir
from core.tokens import visible
from ui.model import current_model, model_choices, model_key, other_model, run_safely
from ui.results import downloads, keep_result, run_with_progress, stored_result
from ui.shell import require_shell
from ui.training import tuned_lens_job

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("🔎 Logit lens")
st.markdown(
    "What does each layer *predict*? The residual stream after every layer is decoded through the model's "
    "own final norm and unembedding (layer 0 is the embeddings; the last layer is the model's real output). "
    "Each cell shows the top-1 next-token guess at that layer and position. The **tuned lens** (Belrose et al. "
    "2023) first passes each layer through an affine translator trained to match the final layer, which reads "
    "early layers far better; **sub-layer rows** show the residual after each attention and after each MLP."
)

handle = current_model()


@st.cache_data(show_spinner=False, max_entries=64)
def lens_of(key: str, settings: lens.Settings, _handle) -> lens.Result:
    return lens.run(_handle, settings)


with st.form("lens"):
    prompt = st.text_area("Prompt", value="The Eiffel Tower is in the city of", height=90)
    left, middle, right = st.columns(3)
    top_k = left.slider("Top-k tokens per layer", 1, 20, 5)
    reader = middle.radio("Lens", ["logit", "tuned"], horizontal=True,
                          help="tuned: per-layer translators trained for this model (train one below)")
    resolution = right.radio("Rows", ["layer", "sublayer"], horizontal=True,
                             format_func={"layer": "after each layer", "sublayer": "after attention and MLP"}.get)
    left, right = st.columns([2, 1])
    track_text = left.text_input("Track tokens (comma-separated)", value="",
                                 placeholder='" Paris", Paris, London',
                                 help='With or without a leading space: " Paris" and "Paris" are different tokens. '
                                      "A word of several tokens is tracked by its first.")
    colour = right.selectbox("Colour the grid by", list(COLOURS))
    st.form_submit_button("Run the lens", type="primary")

track = tuple(t.strip().strip('"').strip("'") if t.strip().startswith(('"', "'")) else t.strip()
              for t in track_text.split(",") if t.strip())
if not prompt.strip():
    st.warning("The prompt is empty: type some text to look at.")
    st.stop()

if reader == "tuned" and not (default_lens_dir(handle) / "config.json").is_file():
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

settings = lens.Settings(prompt=prompt, top_k=top_k, lens=reader, track=track, resolution=resolution)
with st.spinner("One forward pass, every layer decoded…"):
    result = run_safely(lens_of, model_key(), settings, handle)
for note in result.notes:
    st.caption(note)

tracked = 0 if track else None
if track and len(track) > 1:
    tracked = track.index(st.selectbox("Tracked token shown in the grid", track))
if COLOURS[colour][0].startswith("tracked") and not track:
    st.caption("No token tracked: the grid is coloured by the top-1 probability.")
    colour = "top-1 probability"
frame = grid_frame(result, tracked)
heatmap = grid(frame, colour, title=f"{reader} lens · {resolution} rows")
st.altair_chart(heatmap, width="stretch")

tokens = result.tokens
position = st.select_slider("Position to inspect", options=list(range(len(tokens))), value=len(tokens) - 1,
                            format_func=lambda p: f"{p}: {visible(tokens[p])}")
detail = result.frames()["lens"]
at_position = detail[detail["position"] == position]
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Top-{top_k} per layer after “{visible(tokens[position])}”")
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
    if track:
        rows = result.frames()["tracked"]
        rows = rows[rows["position"] == position].pivot(index="row", columns="token", values="prob").reset_index()
        tracked_chart = layer_curves(rows.rename(columns={"row": "layer"}), list(track),
                                     "Tracked tokens' probability", "probability", symlog=False)
        st.altair_chart(tracked_chart, width="stretch")

st.caption("Downloads: every row × position × top-k (CSV), and each chart (PNG, SVG).")
cols = st.columns(4)
downloads(cols[0], "logit_lens", frame=detail)
downloads(cols[1], "logit_lens_grid", chart=heatmap)
downloads(cols[2], "logit_lens_curves", chart=curve_chart)
if tracked_chart is not None:
    downloads(cols[3], "logit_lens_tracked", frame=result.frames()["tracked"], chart=tracked_chart)

# -- direct logit attribution ------------------------------------------------------------------------
st.header("Direct logit attribution")
st.markdown("Which heads and MLPs *write* the prediction? With the final norm's scale frozen at its clean value, "
            "the last residual is a sum of the embeddings, every head's output, every MLP's output and biases; "
            "each term's dot product with a token's unembedding is its share of that token's logit (before any "
            "soft cap), and the shares add up to the logit exactly.")
with st.form("attribute"):
    left, middle, right = st.columns(3)
    target = left.text_input("Token", value=result.lens.top_tokens[-1][0][-1][0],  # the output's top-1, as typed
                             help='e.g. " Paris" (leading space) or #1234 for an id')
    versus = middle.text_input("Versus (optional)", value="", help="attribute the logit difference token − versus")
    where = right.number_input("Position", min_value=-len(tokens), max_value=len(tokens) - 1, value=-1)
    go = st.form_submit_button("Attribute")
attribution_settings = attribute.Settings(prompt=prompt, target=target, versus=versus or None, position=int(where))
attribution_request = (model_key(), attribution_settings)
if go:
    keep_result("attribute", attribution_request, run_with_progress(attribute.run, handle, attribution_settings))
found = stored_result("attribute", attribution_request, button="Attribute")
if found is not None:
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

# -- side by side --------------------------------------------------------------------------------------
st.header("Side by side")
st.markdown("A second prompt on this model, or this prompt on a second model: per layer, KL(A ‖ B) between the "
            "two lens distributions at the last position. Models of different depth are aligned by fraction of "
            "depth; models with different vocabularies are compared by their top-1 tokens only.")
with st.form("compare"):
    left, right = st.columns([3, 1])
    prompt_b = left.text_input("Prompt B", value=prompt)
    others = ["(this model)"] + [m for m in model_choices() if m != handle.spec]
    model_b = right.selectbox("Model B", others)
    go = st.form_submit_button("Compare")
compare_settings = compare.Settings(prompt_a=prompt, prompt_b=prompt_b)
compare_request = (model_key(), compare_settings, model_b)
if go:
    second = handle if model_b == "(this model)" else other_model(model_b)
    keep_result("compare", compare_request, run_safely(compare.run, handle, compare_settings, None, second))
compared = stored_result("compare", compare_request, button="Compare")
if compared is not None:
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
    st.markdown("Trained here with `python -m core tuned-lens` or the button above, saved in the tuned-lens package's "
                "format (`config.json` + `params.pt`) under this server's LAYERSCOPE_HOME; published lenses in that "
                "format (e.g. Llama-2-7B's) load with `python -m core lens --lens tuned --lens-path DIR`.")
    if (default_lens_dir(handle) / "config.json").is_file() and st.button("Measure both lenses on the held-out text"):
        measured = run_with_progress(train_tuned_lens, handle, TunedSettings())
        st.dataframe(pd.DataFrame(measured.frames()["layers"]).round(4), width="stretch", hide_index=True)
