"""Page: train a small transformer from scratch and watch next-token prediction turn into skills."""

import streamlit as st

from core.errors import UserError
from core.tinylm import charts
from core.tinylm.activations import attention_patterns, residual_pca
from core.tinylm.background import start_training
from core.tinylm.checkpoint import TrainedLM, list_checkpoints
from core.tinylm.corpora import corpus_names, decode_text, describe_corpus, load_corpus
from core.tinylm.generate import sample_text
from core.tinylm.model import POSITIONAL_KINDS, TinyLMConfig
from core.tinylm.tokenization import DEFAULT_BPE_VOCAB
from core.tinylm.train import TrainConfig
from ui.model import extra_choices
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

run = st.session_state.get("tinylm_run")
running = run is not None and run.running

# ---- buttons ---------------------------------------------------------------------------------
train_col, stop_col, resume_col = st.columns(3)
if train_col.button("Train", type="primary", disabled=running, width="stretch", key="train"):
    try:
        if corpus_choice == UPLOAD:
            if upload is None:
                raise UserError("choose a text file to upload first")
            corpus = decode_text(upload.name, upload.getvalue())
        else:
            corpus = load_corpus(corpus_choice)
        shape = TinyLMConfig(n_layers=n_layers, n_heads=n_heads, d_model=d_model, context_length=context,
                             positional=positional, dropout=dropout)
        training = TrainConfig(steps=int(steps), batch_size=batch_size, learning_rate=learning_rate,
                               eval_every=max(1, min(50, int(steps) // 10)), seed=int(seed))
        run = st.session_state["tinylm_run"] = start_training(corpus, tokenizer_kind, int(bpe_vocab), shape, training)
        st.session_state.pop("tinylm_loaded", None)
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
    progress = run.progress()
    history = progress.history
    last_eval = history.evals[-1] if history.evals else None
    recent_train = history.train_loss_nats[-10:]
    cols = st.columns(5)
    cols[0].metric(f"Step (of {progress.total_steps})", progress.step)
    cols[1].metric("Train loss", f"{sum(recent_train) / len(recent_train):.3f}" if recent_train else "–")
    cols[2].metric("Validation loss", f"{last_eval.val_loss_nats:.3f}" if last_eval else "–",
                   help="nats per token on held-out text; perplexity is e^loss")
    cols[3].metric("Bigram baseline", f"{history.bigram_val_loss_nats:.3f}")
    cols[4].metric("Tokens / s", f"{history.tokens_per_s:,.0f}")
    if last_eval:
        st.caption(f"Validation perplexity {2.718281828 ** last_eval.val_loss_nats:.2f} "
                   f"(bigram {2.718281828 ** history.bigram_val_loss_nats:.2f}) after "
                   f"{history.train_seconds:.1f} s of training.")
    st.altair_chart(charts.loss_chart(history, progress.total_steps), width="stretch")
    if history.evals:
        st.dataframe(
            [{"step": e.step, "val_loss_nats": round(e.val_loss_nats, 4),
              "val_perplexity": round(2.718281828 ** e.val_loss_nats, 2), "train_seconds": round(e.train_seconds, 1),
              **{f"skill: {k}": v for k, v in (e.skill_accuracy or {}).items()}} for e in history.evals],
            width="stretch", hide_index=True,
        )
    if last_eval and last_eval.skill_accuracy:
        st.subheader("Synthetic skills")
        st.caption("Share of held-out probes whose greedy continuation is exactly right, at each evaluation.")
        st.altair_chart(charts.skills_chart(history, progress.total_steps), width="stretch")
    if progress.error:
        st.error(progress.error)
    if running and not progress.running:
        st.rerun(scope="app")  # finished or stopped: redraw the whole page with the exploration tools


trained: TrainedLM | None = st.session_state.get("tinylm_loaded")
if run is not None and trained is None:
    live_training()
    if not running:
        trained = run.trained()
elif trained is not None:
    st.info(f"Exploring checkpoint **{trained.name}** (trained {trained.meta.get('step', '?')} steps "
            f"on {trained.meta.get('corpus', '?')}).")
    st.altair_chart(charts.loss_chart(trained.history, trained.total_steps), width="stretch")

# ---- checkpoints -----------------------------------------------------------------------------
st.header("Checkpoints")
save_col, load_col = st.columns(2)
with save_col:
    save_name = st.text_input("Save as", key="save_name", disabled=trained is None,
                              placeholder=trained.name if trained else "", help="a name or a folder path")
    if st.button("Save checkpoint", disabled=trained is None, key="save"):
        try:
            path = str(trained.save(save_name.strip() or trained.name))
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
            st.session_state["tinylm_loaded"] = TrainedLM.load(chosen)
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
        st.session_state["tinylm_generated"] = prompt + sample_text(
            trained.model, trained.tokenizer, prompt, new_tokens, temperature, top_k, seed=int(seed)
        )
    except UserError as err:
        st.error(str(err))
if "tinylm_generated" in st.session_state:
    st.code(st.session_state["tinylm_generated"], language=None)

st.header("Attention, layer by layer")
attention_prompt = st.text_input("Prompt", trained.meta.get("sample_text", "")[:24], key="attention_prompt")
attention_layer = st.slider("Layer", 0, trained.model.config.n_layers - 1, 0, key="attention_layer") \
    if trained.model.config.n_layers > 1 else 0
try:
    patterns = attention_patterns(trained.model, trained.tokenizer, attention_prompt)
    st.altair_chart(charts.attention_chart(patterns, attention_layer))
except UserError as err:
    st.error(str(err))

st.header("Activations: 2-D PCA of the residual stream")
st.caption("Each point is one token of held-out text; nearby points are tokens this layer represents alike.")
pca_cols = st.columns(2)
pca_layer = pca_cols[0].slider("After block (0 = embeddings)", 0, trained.model.config.n_layers,
                               trained.model.config.n_layers, key="pca_layer")
colour_by = pca_cols[1].radio("Colour by", ["token", "next_token"], key="pca_colour", horizontal=True,
                              format_func=lambda c: c.replace("_", " "))
pca_text = st.text_area("Text", trained.meta.get("sample_text", ""), key="pca_text", height=100)
try:
    pca = residual_pca(trained.model, trained.tokenizer, pca_text, pca_layer)
    st.altair_chart(charts.pca_chart(pca.points, colour_by, pca.explained_variance_ratio), width="stretch")
except UserError as err:
    st.error(str(err))
