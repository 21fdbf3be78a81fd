"""Page: train a small transformer from scratch and watch next-token prediction turn into skills."""

from pathlib import Path

import streamlit as st

from core.analyses import train
from core.analyses.train import charts
from core.analyses.train.activations import attention_frame, residual_pca
from core.analyses.train.analysis import frames_of
from core.analyses.train.background import start
from core.analyses.train.checkpoint import list_checkpoints
from core.analyses.train.corpora import corpus_names, decode_text, describe_corpus
from core.analyses.train.generate import sample_text
from core.models.tinylm import POSITIONAL_KINDS, TinyLMConfig
from core.analyses.train.tokenization import DEFAULT_BPE_VOCAB
from core.analyses.train.trainer import TrainConfig
from core.errors import UserError
from ui.links import Inputs
from ui.model import extra_choices
from ui.results import downloads, run_analysis
from ui.shell import require_shell

UPLOAD = "upload a text file…"
DEFAULT_SHAPE, DEFAULT_TRAINING = TinyLMConfig(), TrainConfig()

PAGE_DEFAULT_STEPS = 200
PAGE = "train"

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("Next-token prediction, from scratch")
st.write(
    "What does a transformer learn when all it is ever asked is *which token comes next?* "
    "Train a small one here on CPU in about a minute, watch its validation loss fall below a bigram "
    "model (which only looks at the previous token), and see what it can do afterwards: continue text, "
    "count, add, close brackets. Then look inside: which earlier tokens each head attends to, and how "
    "a layer arranges the tokens it has read."
)

# ---- inputs (sidebar) -------------------------------------------------------------------------
main = Inputs(PAGE, label="Training")
held = st.session_state.get(f"result:{PAGE}:{PAGE}")
running = held is not None and held.result.running
with main.form("Train", disabled=running, key="train"):
    st.header("Corpus")
    corpus_choice = main.selectbox("Training text", corpus_names() + [UPLOAD], corpus_names()[0], "corpus",
                                   format_func=lambda n: n if n == UPLOAD else f"{n}: {describe_corpus(n)}")
    upload = main.upload("Plain UTF-8 text (with “upload a text file…”)", ["txt"], "upload")
    tokenizer_kind = main.radio("Tokenizer", ["char", "bpe"], "char", "tokenizer", horizontal=True,
                                help="char: one token per character. bpe: byte-level BPE trained on this corpus.")
    bpe_vocab = main.number_input("BPE vocabulary size (bpe)", 260, 8192, DEFAULT_BPE_VOCAB, "bpe_vocab", step=64)
    st.header("Model")
    n_layers = main.slider("Layers", 1, 8, DEFAULT_SHAPE.n_layers, "layers")
    d_model = main.select_slider("Width (d_model)", [32, 48, 64, 96, 128, 192, 256], DEFAULT_SHAPE.d_model, "d_model")
    n_heads = main.select_slider("Heads", [1, 2, 3, 4, 6, 8], DEFAULT_SHAPE.n_heads, "heads")
    context = main.select_slider("Context (tokens)", [16, 32, 64, 128, 256], DEFAULT_SHAPE.context_length, "context")
    st.header("Training")
    # The page starts with a short run (about 15 s on an idle 2-core CPU); bench/train.py uses the full default.
    steps = main.number_input("Steps", 1, 100_000, PAGE_DEFAULT_STEPS, "steps", step=100)
    batch_size = main.select_slider("Batch size", [4, 8, 16, 32, 64, 128], DEFAULT_TRAINING.batch_size, "batch")
    with st.expander("More options"):
        positional = main.radio("Positions", list(POSITIONAL_KINDS), POSITIONAL_KINDS[0], "positional", horizontal=True)
        dropout = main.slider("Dropout", 0.0, 0.5, DEFAULT_SHAPE.dropout, "dropout", step=0.05)
        learning_rate = main.select_slider("Peak learning rate", [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 6e-3, 1e-2],
                                           DEFAULT_TRAINING.learning_rate, "lr")
        seed = main.number_input("Seed", 0, 2**31 - 1, DEFAULT_TRAINING.seed, "seed")


def settings_from_inputs() -> train.Settings:
    """The sidebar as Settings: the upload's text, or the shipped corpus by name (UserError when unusable)."""
    if corpus_choice == UPLOAD:
        if upload is None:
            raise UserError("choose a text file to upload first")
        corpus = decode_text(upload.name, upload.data)
    else:
        corpus = corpus_choice
    shape = TinyLMConfig(n_layers=n_layers, n_heads=n_heads, d_model=d_model, context_length=context,
                         positional=positional, dropout=dropout)
    training = TrainConfig(steps=int(steps), batch_size=batch_size, learning_rate=learning_rate,
                           eval_every=max(1, min(50, int(steps) // 10)), seed=int(seed))
    return train.Settings(corpus=corpus, tokenizer=tokenizer_kind, bpe_vocab=int(bpe_vocab), shape=shape,
                          training=training)


def history_downloads(history, loss_chart, skills_chart) -> None:
    """The curves and evaluations as CSV, the charts as PNG and SVG."""
    st.caption("Downloads: the loss curves, the evaluations and the skill accuracies (CSV), the charts (PNG, SVG).")
    frames = frames_of(history)
    left, middle, right = st.columns(3)
    downloads(left, "train_loss", frame=frames["loss"], chart=loss_chart)
    downloads(middle, "train_evaluations", frame=frames["evaluations"])
    if skills_chart is not None:
        downloads(right, "train_skills", frame=frames["skills"], chart=skills_chart)


# A training run is a background job (it outlives this script run); run_analysis keeps it with its settings.
# Settings that cannot be built (no upload yet) only matter when Train is pressed.
try:
    settings = settings_from_inputs()
except UserError as err:
    if main.submitted:
        st.error(str(err))
    settings = None
run = None
if settings is not None:
    run = run_analysis(main, "train", lambda handle, s, progress: start(s), settings, button="Train",
                       needs_model=False, store=False)
elif held is not None:
    run = held.result
if run is not None and main.submitted:
    st.session_state.pop(f"result:{PAGE}:checkpoint", None)  # a new run replaces a loaded checkpoint
running = run is not None and run.running

# ---- stop and resume --------------------------------------------------------------------------
stop_col, resume_col, _ = st.columns([1, 1, 4])
if stop_col.button("Stop", disabled=not running, width="stretch", key="stop"):
    run.stop()
if resume_col.button("Resume", disabled=run is None or running or not run.can_resume, width="stretch", key="resume"):
    run.resume()
    running = True


# ---- live training ---------------------------------------------------------------------------
@st.fragment(run_every=1.0 if running else None)
def live_training():
    status = run.status()
    history = status.history
    last_eval = history.evals[-1] if history.evals else None
    recent_train = history.train_loss_nats[-10:]
    cols = st.columns(5)
    cols[0].metric(f"Step (of {status.total_steps})", status.step)
    cols[1].metric("Train loss", f"{sum(recent_train) / len(recent_train):.3f}" if recent_train else "–")
    cols[2].metric("Validation loss", f"{last_eval.val_loss_nats:.3f}" if last_eval else "–",
                   help="nats per token on held-out text; perplexity is e^loss")
    cols[3].metric("Bigram baseline", f"{history.bigram_val_loss_nats:.3f}")
    cols[4].metric("Tokens / s", f"{history.tokens_per_s:,.0f}")
    if last_eval:
        st.caption(f"Validation perplexity {2.718281828 ** last_eval.val_loss_nats:.2f} "
                   f"(bigram {2.718281828 ** history.bigram_val_loss_nats:.2f}) after "
                   f"{history.train_seconds:.1f} s of training.")
    loss_chart = charts.loss_chart(history, status.total_steps)
    st.altair_chart(loss_chart, width="stretch")
    if history.evals:
        st.dataframe(history.evaluations_frame(), width="stretch", hide_index=True)
    skills_chart = None
    if last_eval and last_eval.skill_accuracy:
        st.subheader("Synthetic skills")
        st.caption("Share of held-out probes whose greedy continuation is exactly right, at each evaluation.")
        skills_chart = charts.skills_chart(history, status.total_steps)
        st.altair_chart(skills_chart, width="stretch")
    if status.error:
        st.error(status.error)
    if running and not status.running:
        st.rerun(scope="app")  # finished or stopped: redraw the whole page with the exploration tools
    if not status.running:
        history_downloads(history, loss_chart, skills_chart)


# ---- a saved checkpoint, loaded instead (the sidebar) --------------------------------------------
checkpoint = Inputs(PAGE, "checkpoint", label="Checkpoint")
saved = [str(p) for p in list_checkpoints()]
with checkpoint.form("Load checkpoint", title="Saved checkpoints", expanded=False, disabled=running or not saved,
                     key="load"):
    chosen = checkpoint.selectbox("Saved checkpoints", saved or [""], (saved or [""])[0], "path",
                                  format_func=lambda p: Path(p).name if p else "(none saved yet)")
loaded = run_analysis(checkpoint, "train.checkpoint", lambda handle, path, progress: train.Result.load(Path(path)),
                      chosen, button="Load checkpoint", needs_model=False, store=False, row=False) if chosen else None

result: train.Result | None = None
if loaded is not None:  # pressing Train forgets the loaded checkpoint (above)
    result = loaded
    st.info(f"Exploring checkpoint **{result.trained.name}** (trained {result.trained.meta.get('step', '?')} steps "
            f"on {result.trained.meta.get('corpus', '?')}).")
    loaded_chart = charts.loss_chart(result.history, result.total_steps)
    st.altair_chart(loaded_chart, width="stretch")
    history_downloads(result.history, loaded_chart, None)
elif run is not None:
    live_training()
    if not running:
        result = run.result()
trained = result.trained if result is not None else None

# ---- checkpoints -----------------------------------------------------------------------------
st.header("Checkpoints")
save_name = st.text_input("Save as", key="save_name", disabled=trained is None,
                          placeholder=trained.name if trained else "", help="a name or a folder path")
if st.button("Save checkpoint", disabled=trained is None, key="save"):
    try:
        path = str(result.save(save_name.strip() or None))
        if path not in extra_choices():
            extra_choices().append(path)  # offered in the sidebar's model picker, for the Logit-lens page
        st.session_state["train:saved"] = path
        st.rerun()  # the sidebar's list of saved checkpoints (drawn above) shows the new one
    except UserError as err:
        st.error(str(err))
if "train:saved" in st.session_state:
    st.success(f"Saved to {st.session_state.pop('train:saved')}. Pick it in the sidebar's model list to explore it on "
               "the Logit-lens page, or under **Saved checkpoints** in the sidebar to come back to it here.")

if trained is None:
    st.info("Train a model (or load a checkpoint) to generate text and look inside it.")
    st.stop()

# ---- what the trained model does -------------------------------------------------------------
st.header("Generate")
generate = Inputs(PAGE, "generate", label="Generation")
prompt = generate.text_area("Prompt", trained.meta.get("sample_text", "")[:40], "prompt", height=80)
gen_cols = st.columns(3)
with gen_cols[0]:
    temperature = generate.slider("Temperature", 0.0, 2.0, 0.8, "temperature", step=0.05,
                                  help="0 = always the most likely token")
with gen_cols[1]:
    top_k = generate.slider("Top-k", 0, 100, 0, "top_k", help="0 = sample from the whole vocabulary")
with gen_cols[2]:
    new_tokens = generate.slider("New tokens", 10, 500, 200, "new_tokens", step=10)
generate.submitted = st.button("Generate", key="generate")
text = run_analysis(generate, "train.generate",
                    lambda handle, s, progress: s[0] + sample_text(trained.model, trained.tokenizer, *s, seed=int(seed)),
                    (prompt, int(new_tokens), float(temperature), int(top_k)), button="Generate", needs_model=False,
                    store=False, row=False)
if text is not None:
    st.code(text, language=None)

st.header("Attention, layer by layer")
n_layers_trained = trained.model.config.n_layers
attention_prompt = st.text_input("Prompt", trained.meta.get("sample_text", "")[:24], key="attention_prompt")
attention_layer = st.slider("Layer", 0, n_layers_trained - 1, 0, key="attention_layer") if n_layers_trained > 1 else 0
try:
    patterns = attention_frame(trained.handle, attention_prompt, attention_layer)
    attention_chart = charts.attention_chart(patterns, attention_layer)
    st.altair_chart(attention_chart)
    downloads(st.columns(3)[0], "train_attention", frame=patterns, chart=attention_chart)
except UserError as err:
    st.error(str(err))

st.header("Activations: 2-D PCA of the residual stream")
st.caption("Each point is one token of held-out text; nearby points are tokens this layer represents alike.")
pca_cols = st.columns(2)
pca_layer = pca_cols[0].slider("After block (0 = embeddings)", 0, n_layers_trained, n_layers_trained, key="pca_layer")
colour_by = pca_cols[1].radio("Colour by", ["token", "next_token"], key="pca_colour", horizontal=True,
                              format_func=lambda c: c.replace("_", " "))
pca_text = st.text_area("Text", trained.meta.get("sample_text", ""), key="pca_text", height=100)
try:
    pca = residual_pca(trained.handle, pca_text, pca_layer)
    pca_chart = charts.pca_chart(pca.points, colour_by, pca.explained_variance_ratio)
    st.altair_chart(pca_chart, width="stretch")
    downloads(st.columns(3)[0], "train_pca", frame=pca.points, chart=pca_chart)
except UserError as err:
    st.error(str(err))
