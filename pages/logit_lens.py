"""Page: the logit lens of any prompt, every layer, every position."""

import streamlit as st

from core.analyses import lens
from core.charts import layer_curves, lens_heatmap, lens_heatmap_frame
from core.tokens import visible
from ui.model import current_model, model_key, run_safely
from ui.results import downloads
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("🔎 Logit lens")
st.markdown(
    "What does each layer *predict*? The residual stream after every layer is decoded through the model's "
    "own final norm and unembedding (layer 0 is the embeddings; the last layer is the model's real output). "
    "Each cell shows the top-1 next-token guess at that layer and position, coloured by its probability."
)

handle = current_model()


@st.cache_data(show_spinner=False, max_entries=64)
def lens_of(key: str, settings: lens.Settings, _handle) -> lens.Result:
    return lens.run(_handle, settings)


with st.form("lens"):
    prompt = st.text_area("Prompt", value="The Eiffel Tower is in the city of", height=90)
    top_k = st.slider("Top-k tokens per layer", 1, 20, 5)
    st.form_submit_button("Run the lens", type="primary")

if not prompt.strip():
    st.warning("The prompt is empty: type some text to look at.")
    st.stop()

with st.spinner("One forward pass, every layer decoded…"):
    result = run_safely(lens_of, model_key(), lens.Settings(prompt=prompt, top_k=top_k), handle).lens

frame = lens_heatmap_frame(result)
heatmap = lens_heatmap(frame, handle.n_layers)
st.altair_chart(heatmap, width="stretch")

tokens = result.tokens[0]
position = st.select_slider(
    "Position to inspect",
    options=list(range(len(tokens))),
    value=len(tokens) - 1,
    format_func=lambda p: f"{p}: {visible(tokens[p])}",
)
detail = result.frame()
at_position = detail[detail["position"] == position]

left, right = st.columns([3, 2])
with left:
    st.subheader(f"Top-{top_k} per layer after “{visible(tokens[position])}”")
    table = at_position.pivot(index="layer", columns="rank", values="token").rename(columns=lambda r: f"#{r}")
    probs = at_position.pivot(index="layer", columns="rank", values="prob").rename(columns=lambda r: f"p#{r}")
    combined = table.join(probs)
    combined = combined[[c for pair in zip(table.columns, probs.columns) for c in pair]].map(
        lambda v: visible(v) if isinstance(v, str) else round(float(v), 3)
    )
    st.dataframe(combined.iloc[::-1], width="stretch", height=min(700, 36 * (len(combined) + 1)))
with right:
    curves = at_position[at_position["rank"] == 1][["layer", "entropy_bits", "kl_to_final_bits"]]
    curve_chart = layer_curves(curves, ["entropy_bits", "kl_to_final_bits"], "Entropy and KL(final ‖ layer)", "bits")
    st.altair_chart(curve_chart, width="stretch")

st.caption("Downloads: every layer × position × top-k (CSV), the heatmap and the curves (PNG, SVG).")
left, middle, right = st.columns(3)
downloads(left, "logit_lens", frame=detail)
downloads(middle, "logit_lens_heatmap", chart=heatmap)
downloads(right, "logit_lens_curves", chart=curve_chart)
