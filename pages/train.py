"""Page: train a small transformer from scratch and watch next-token prediction turn into skills."""

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
from ui.model import extra_choices
from ui.results import downloads, keep_result, stored_result
from ui.shell import require_shell

UPLOAD = "upload a text file…"
DEFAULT_SHAPE, DEFAULT_TRAINING = TinyLMConfig(), TrainConfig()

PAGE_DEFAULT_STEPS = 200

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("Next-token prediction, from scratch")
st.write(
    "What does a transformer learn when all it is ever asked is *which token comes next?* "
    "Train a small one here on CPU in about a minute, watch its validation loss fall below a bigram "
    "model (which only looks at the previous token), and see what it can do afterwards: continue text, "
    "count, add, close brackets. Then look inside: which earlier tokens each head attends to, and how "
    "a layer arranges the tokens it has read."
)

# ---- inputs ----------------------------------------------------------------------------------
with st.sidebar:
    st.header("Corpus")
    corpus_choice = st.selectbox(
        "Training text",
        corpus_names() + [UPLOAD],
        key="corpus",
        format_func=lambda n: n if n == UPLOAD else f"{n}: {describe_corpus(n)}",
    )
    upload = st.file_uploader("Plain UTF-8 text", type=["txt"], key="upload") if corpus_choice == UPLOAD else None
    tokenizer_kind = st.radio("Tokenizer", ["char", "bpe"], key="tokenizer", horizontal=True,
                              help="char: one token per character. bpe: byte-level BPE trained on this corpus.")
    bpe_vocab = (
        st.number_input("BPE vocabulary size", 260, 8192, DEFAULT_BPE_VOCAB, step=64, key="bpe_vocab")
        if tokenizer_kind == "bpe" else DEFAULT_BPE_VOCAB
    )
    st.header("Model")
    n_layers = st.slider("Layers", 1, 8, DEFAULT_SHAPE.n_layers, key="layers")
    d_model = st.select_slider("Width (d_model)", [32, 48, 64, 96, 128, 192, 256], DEFAULT_SHAPE.d_model, key="d_model")
    n_heads = st.select_slider("Heads", [1, 2, 3, 4, 6, 8], DEFAULT_SHAPE.n_heads, key="heads")
    context = st.select_slider("Context (tokens)", [16, 32, 64, 128, 256], DEFAULT_SHAPE.context_length, key="context")
    positional = st.radio("Positions", POSITIONAL_KINDS, key="positional", horizontal=True)
    dropout = st.slider("Dropout", 0.0, 0.5, DEFAULT_SHAPE.dropout, step=0.05, key="dropout")
    st.header("Training")
    batch_size = st.select_slider("Batch size", [4, 8, 16, 32, 64, 128], DEFAULT_TRAINING.batch_size, key="batch")
    learning_rate = st.select_slider(
        "Peak learning rate", [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 6e-3, 1e-2], DEFAULT_TRAINING.learning_rate, key="lr"
    )
    # The page starts with a short run (about 15 s on an idle 2-core CPU); bench/train.py uses the full default.
    steps = st.number_input("Steps", 1, 100_000, PAGE_DEFAULT_STEPS, step=100, key="steps")
    seed = st.number_input("Seed", 0, 2**31 - 1, DEFAULT_TRAINING.seed, key="seed")

# What the stored run was trained with, to tell when the sidebar has changed since (the stale caption).
inputs = (corpus_choice, upload.file_id if upload is not None else None, tokenizer_kind, int(bpe_vocab), n_layers,
          d_model, n_heads, context, positional, dropout, batch_size, learning_rate, int(steps), int(seed))
notice = st.empty()
with notice.container():
    run = stored_result("train", inputs, button="Train")  # a background.TrainingRun
running = run is not None and run.running


def settings_from_inputs() -> train.Settings:
    """The sidebar as Settings: the upload's text, or the shipped corpus by name (UserError when unusable)."""
    if corpus_choice == UPLOAD:
        if upload is None:
            raise UserError("choose a text file to upload first")
        corpus = decode_text(upload.name, upload.getvalue())
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


# ---- buttons ---------------------------------------------------------------------------------
train_col, stop_col, resume_col = st.columns(3)
if train_col.button("Train", type="primary", disabled=running, width="stretch", key="train"):
    try:
        run = keep_result("train", inputs, start(settings_from_inputs()))
        st.session_state.pop("train_loaded", None)
        notice.empty()  # a new run: the stored one's stale caption goes
        running = True
    except UserError as err:
        st.error(str(err))
if stop_col.button("Stop", disabled=not running, width="stretch", key="stop"):
    run.stop()
if resume_col.button("Resume", disabled=run is None or not run.can_resume, width="stretch", key="resume"):
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


result: train.Result | None = st.session_state.get("train_loaded")  # a checkpoint read from disk
if run is not None and result is None:
    live_training()
    if not running:
        result = run.result()
elif result is not None:
    st.info(f"Exploring checkpoint **{result.trained.name}** (trained {result.trained.meta.get('step', '?')} steps "
            f"on {result.trained.meta.get('corpus', '?')}).")
    loaded_chart = charts.loss_chart(result.history, result.total_steps)
    st.altair_chart(loaded_chart, width="stretch")
    history_downloads(result.history, loaded_chart, None)
trained = result.trained if result is not None else None

# ---- checkpoints -----------------------------------------------------------------------------
st.header("Checkpoints")
save_col, load_col = st.columns(2)
with save_col:
    save_name = st.text_input("Save as", key="save_name", disabled=trained is None,
                              placeholder=trained.name if trained else "", help="a name or a folder path")
    if st.button("Save checkpoint", disabled=trained is None, key="save"):
        try:
            path = str(result.save(save_name.strip() or None))
            if path not in extra_choices():
                extra_choices().append(path)  # offered in the sidebar's model picker, for the Logit-lens page
            st.success(f"Saved to {path}. Pick it in the sidebar's model list to explore it on the Logit-lens page.")
        except UserError as err:
            st.error(str(err))
with load_col:
    saved = list_checkpoints()
    chosen = st.selectbox("Saved checkpoints", saved, format_func=lambda p: p.name, key="checkpoint",
                          disabled=running or not saved)
    if st.button("Load checkpoint", disabled=running or not saved, key="load"):
        try:
            st.session_state["train_loaded"] = train.Result.load(chosen)
            st.rerun()
        except UserError as err:
            st.error(str(err))

if trained is None:
    st.info("Train a model (or load a checkpoint) to generate text and look inside it.")
    st.stop()

# ---- what the trained model does -------------------------------------------------------------
st.header("Generate")
prompt = st.text_area("Prompt", trained.meta.get("sample_text", "")[:40], key="prompt", height=80)
gen_cols = st.columns(3)
temperature = gen_cols[0].slider("Temperature", 0.0, 2.0, 0.8, 0.05, key="temperature",
                                 help="0 = always the most likely token")
top_k = gen_cols[1].slider("Top-k", 0, 100, 0, key="top_k", help="0 = sample from the whole vocabulary")
new_tokens = gen_cols[2].slider("New tokens", 10, 500, 200, 10, key="new_tokens")
if st.button("Generate", key="generate"):
    try:
        st.session_state["train_generated"] = prompt + sample_text(
            trained.model, trained.tokenizer, prompt, new_tokens, temperature, top_k, seed=int(seed)
        )
    except UserError as err:
        st.error(str(err))
if "train_generated" in st.session_state:
    st.code(st.session_state["train_generated"], language=None)

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
