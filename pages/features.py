"""Page: sparse dictionary features (SAEs, transcoders) of any prompt, layer by layer; one feature explained;
steering with it; and dictionaries trained here, as a server job every session sees."""

import streamlit as st

from core.analyses import features, sae
from core.analyses.features import explain
from core.analyses.features.charts import (
    density_chart, feature_grid, grid_frame, steering_frame, steering_grids, token_bars,
)
from ui.links import Inputs
from ui.model import current_model, model_key, run_safely
from ui.results import downloads, run_analysis
from ui.shell import require_shell
from ui.training import TRAININGS

PAGE = "features"


def escape_markdown(text: str) -> str:
    """Corpus text shown as itself, not as Markdown (code and tables hold *, _, #, `, [, ], |)."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>~$:" else ch for ch in text)


require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("✨ Features")
st.markdown(
    "Which *features* are active at each layer? A sparse dictionary (a sparse autoencoder on the residual stream "
    "or an MLP's output, or a transcoder standing in for an MLP) rewrites a layer's activation as a few active "
    "latents out of thousands, each with a decoder direction. The grid shows each dictionary's strongest latent "
    "at every position (hover for its activation and the tokens its direction promotes through the logit lens), "
    "with the share of the activation the dictionary fails to reconstruct (FVU) beside it. Choose a feature to "
    "see its top-activating contexts and its density, and steer the model with it."
)

handle = current_model()


trained = features.available(handle)
names = {path: path.rstrip("/").split("/")[-1] + (" (shipped)" if path.startswith(str(features.SHIPPED)) else "")
         for path in trained}

# -- inputs (sidebar) -------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Features")
with main.form("Read features"):
    prompt = main.text_area("Prompt", "The Eiffel Tower is in the city of", "prompt", height=80)
    chosen = main.multiselect("Dictionaries for this model", trained, trained[:4], "dictionaries", format_func=names.get)
    typed = main.text_area("Other dictionary folders (one per line)", "", "folders", height=68,
                           help="Gemma Scope 2, SAELens or sparsify folders, e.g. …/resid_post/layer_12_width_16k_l0_small")
    top = main.slider("Features per position", 1, 10, 5, "top")

with st.sidebar.expander("Train a dictionary here"):
    site = st.radio("Site", sae.analysis.SITES, horizontal=True,
                    help="resid: the residual after block L; mlp_out: block L's MLP output; transcoder: block L's "
                         "MLP input → output")
    layer = st.number_input("Layer (lens numbering)", 0, handle.n_layers, min(9, handle.n_layers))
    width = st.select_slider("Width", [512, 1024, 2048, 4096, 8192, 16384], value=4096)
    k = st.select_slider("k (active latents per token)", [8, 16, 32, 64, 128], value=32)
    tokens = st.select_slider("Training tokens", [20_000, 50_000, 100_000, 200_000, 400_000], value=400_000)
    train = st.button("Train", help="runs on the server: leaving the page does not stop it, and every session sees it")

folders = [line.strip() for line in typed.splitlines() if line.strip()]
if not chosen and not folders and trained:  # nothing picked (yet): this model's own, newest first
    chosen = trained[:4]
    st.caption(f"Reading the dictionaries for {handle.spec}: trained here, or shipped with layerscope (pick others "
               "in the sidebar).")
dictionaries = tuple(dict.fromkeys(list(chosen) + folders))

# -- training as a server job -----------------------------------------------------------------------------
train_settings = sae.Settings(site=site, layer=int(layer), width=int(width), k=int(k), tokens=int(tokens),
                              overwrite=True)
key = ("sae", model_key(), train_settings)
running = [job for job in TRAININGS.running() if isinstance(job.key, tuple) and job.key[:2] == ("sae", model_key())]
if train:
    run_safely(train_settings.validate)
    job = TRAININGS.request(key, lambda progress: sae.run(handle, train_settings, progress))[0]
    running = [job]
for job in running:
    bar = st.progress(job.fraction, text=job.message)
    while not job.wait(0.5):
        bar.progress(job.fraction, text=f"Training a dictionary ({job.key[2].site} {job.key[2].layer}): "
                                        f"{job.message} · {job.seconds:.0f} s. It runs on the server.")
    bar.empty()
    done = run_safely(job.result)
    st.success(f"Trained {done.settings.site} {done.settings.layer}: FVU {done.scores.fvu:.3f}, "
               f"ΔCE {done.scores.delta_ce_nats:.3f} nats, {done.dead_fraction:.1%} dead, in {done.seconds:.0f} s. "
               "It is now in the list of dictionaries.")

if not dictionaries:
    st.info(f"No dictionary for {handle.spec} yet: train one in the sidebar (**Train a dictionary here**: a "
            "residual SAE at a middle layer takes minutes on a CPU), or type the folder of a downloaded one.")
    st.stop()

settings = features.Settings(prompt=prompt, dictionaries=dictionaries, top=int(top))
result = run_analysis(main, "features", features.run, settings, button="Read features", auto=True)
if result is None:
    st.stop()

# -- the grid -----------------------------------------------------------------------------------------------
frames = result.frames()
frame = grid_frame(result)
chart = feature_grid(frame, frames["layers"])
st.altair_chart(chart, width="stretch")
st.caption("Cell: the strongest latent (its id) at that layer and position, coloured by its activation relative to "
           "the largest in its row. Bar: the dictionary's FVU on this prompt (BOS left out).")
table = frames["layers"][["dictionary", "kind", "site", "layer", "width", "fvu", "path"]]
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"fvu": st.column_config.NumberColumn("FVU (this prompt)", format="%.3f")})
with st.expander(f"Every feature at every position ({len(frames['features'])} rows)"):
    st.dataframe(frames["features"].drop(columns=["site", "layer"]), hide_index=True, width="stretch",
                 column_config={"activation": st.column_config.NumberColumn(format="%.3g")})
cols = st.columns(4)
downloads(cols[0], "features", frame=frames["features"])
downloads(cols[1], "features_grid", chart=chart)
downloads(cols[2], "features_errors", frame=frames["errors"])

# -- one feature -------------------------------------------------------------------------------------------
active = frames["features"].sort_values("activation", ascending=False).drop_duplicates(["dictionary", "feature"])
paths = {layer.loaded.label: layer.loaded.path for layer in result.layers}
options = [(row.dictionary, int(row.feature)) for row in active.itertuples()] or [(next(iter(paths)), 0)]
one = Inputs(PAGE, "feature", label="One feature", scope=result)
with st.sidebar:
    st.markdown("**One feature**")
    picked = one.selectbox("Feature (strongest on this prompt first)", list(range(len(options))), 0, "pick",
                           format_func=lambda i: f"{options[i][0]} · #{options[i][1]}")
    typed_id = one.number_input("…or any feature id of that dictionary", -1, None, -1, "id",
                                help="-1: the one chosen above")
one.check()
label, feature = options[picked][0], (int(typed_id) if typed_id >= 0 else options[picked][1])

st.header(f"Feature {label} · #{feature}")
card = run_analysis(one, "features.explain", lambda h, s, p: explain.run(h, s), explain.Settings(paths[label], feature),
                    auto=True, store=False, row=False)
if card is not None:
    for note in card.notes:
        st.caption(note)
    left, middle, right = st.columns(3)
    left.altair_chart(token_bars(*zip(*card.promoted), "Promotes", "#31a354"), width="stretch")
    middle.altair_chart(token_bars(*zip(*card.suppressed), "Suppresses", "#de2d26"), width="stretch")
    right.altair_chart(density_chart(card.histogram, card.bin_edges, card.density), width="stretch")
    st.subheader(f"Top-activating contexts ({card.corpus_tokens:,} tokens of the shipped corpora)")
    for c in card.contexts:
        before, token, after = (escape_markdown(t.replace("\n", "⏎")) for t in (c.before, c.token, c.after))
        st.markdown(f"`{c.activation:9.3g}` … {before}:orange-background[{token}]{after} …")

    # -- steering ------------------------------------------------------------------------------------------
    steer = Inputs(PAGE, "steer", label="Steering")
    largest = card.max_activation * card.decoder_norm
    with steer.form("Steer", title=f"Steer with {label} · #{feature}"):
        mode = steer.radio("How", ["add", "clamp"], "add", "mode", horizontal=True,
                           format_func={"add": "add α × direction", "clamp": "clamp activation to α"}.get)
        alpha = steer.number_input("α (0: twice the largest the feature writes on the corpus)", None, None, 0.0,
                                   "alpha", step=1.0,
                                   help="add: the multiple of the unit decoder direction; clamp: the activation imposed")
        new_tokens = steer.slider("Tokens to generate", 5, 60, 20, "new_tokens")
    if not alpha:
        alpha = float(round(2 * (largest if mode == "add" else card.max_activation), 1) or 10.0)
    steer_settings = features.SteerSettings(prompt=prompt, dictionary=paths[label], feature=feature, mode=mode,
                                            alpha=float(alpha), new_tokens=int(new_tokens))
    steered = run_analysis(steer, "features.steer", features.steer, steer_settings, button="Steer")
    if steered is not None:
        st.subheader(f"Steering: {steered.settings.mode} α = {steered.settings.alpha:g} at {steered.label}")
        left, right = st.columns(2)
        for column, name, text in ((left, "Before", steered.continuation_before),
                                   (right, "After", steered.continuation_after)):
            column.markdown(f"**{name}:** {escape_markdown(prompt)}:blue-background[{escape_markdown(text)}]")
        lens = steering_frame(steered)
        grids = steering_grids(lens)
        st.altair_chart(grids, width="stretch")
        downloads(st.columns(4)[0], "features_steering", frame=lens, chart=grids)
