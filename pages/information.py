"""Page: the journey of information. What does each layer keep of the tokens, how compressed is it, and
where does a word's meaning stop depending on its language?"""

import streamlit as st

from core.analyses import information as info
from core.analyses.information import charts
from core.analyses.information.corpus import MIN_TOKENS, corpus_names, decode, parallel_languages
from core.analyses.information.analysis import DEFAULT_CORPUS, MAX_TOKENS
from core.analyses.translation.wordlist import LANGUAGES, SHIPPED_LANGUAGES, load_words
from core.tokens import visible
from ui.links import Inputs
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE = "information"
st.title("🧭 Journey of information")
st.markdown(
    "What does the residual stream still know at each layer (0 = the embeddings)? Linear **probes** read the "
    "current and the previous token off it, the **logit lens** and a probe read the next one, and a probe's "
    "cross-entropy gives a lower bound on the **mutual information** I(residual; next token) = H(next) − CE, "
    "in bits. Probes are fitted on a random two thirds of the text's positions and every number is measured "
    "on the other third. Then how **compressed** the representations are (effective rank, anisotropy, outlier "
    "dimensions), and where a word's **meaning stops depending on its language**: how often its translation "
    "is its nearest neighbour among all the words of the 9-language word list (see the Translation page)."
)
WORDS = load_words()


def describe(name: str) -> str:
    if name in parallel_languages():
        return f"the village story in {LANGUAGES[name].english_name} ({name})"
    return {"shakespeare": "Shakespeare: Macbeth, Hamlet, The Tempest", "synthetic": "synthetic: counting, sums, brackets"}.get(name, name)


# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Journey of information")
with main.form("Run"):
    corpus = main.selectbox("Text", corpus_names(), DEFAULT_CORPUS, "text", format_func=describe)
    upload = main.upload("…or your own text (UTF-8 .txt)", ["txt"], "upload")
    tokens = main.number_input("Tokens read", MIN_TOKENS, MAX_TOKENS, 400, "tokens", step=20,
                               help="each probe is fitted on two thirds of them and scored on the rest")
    word = main.text_input("Word whose embedding neighbours to list", "water", "word")
    with st.expander("More options"):
        seed = main.number_input("Seed", 0, 2**31 - 1, 0, "seed", step=1,
                                 help="picks the fit/score split and the word-list concepts")
        languages = main.multiselect("Languages for translation retrieval", list(WORDS.languages), list(SHIPPED_LANGUAGES),
                                     "languages", format_func=lambda c: f"{LANGUAGES[c].english_name} ({c})")
        concepts = main.number_input("Concepts (rows of the word list)", 2, len(WORDS), 100, "concepts",
                                     help="each goes through the model once per language; chance is 1 / concepts")

text = ""
if upload is not None:
    text = main.checked(lambda: decode(upload.name, upload.data))
    corpus = upload.name
settings = info.Settings(corpus=corpus, tokens=int(tokens), seed=int(seed), languages=tuple(languages),
                         concepts=int(concepts), word=word, text=text)
result = run_analysis(main, "information", info.run, settings)
if result is None:
    st.info("Choose a text and press **Run** (about a minute on a laptop CPU for 400 tokens).")
    st.stop()

frames = result.frames()
layers = frames["layers"]
last = result.layers[-1]
peak = result.peak_retrieval_layer
cols = st.columns(4)
cols[0].metric("Tokens read", result.n_tokens, f"{len(result.fit_positions)} fit / {len(result.score_positions)} score",
               delta_color="off", delta_arrow="off")
cols[1].metric("Model's next-token accuracy", f"{last.next_token_acc:.0%}", help="the lens at the last layer is the model")
cols[2].metric("Translation retrieval peaks at", f"layer {peak}", f"{result.layers[peak].translation_retrieval:.0%}",
               delta_color="off", delta_arrow="off")
cols[3].metric("Effective rank, embeddings → output",
               f"{result.layers[0].effective_rank:.1f} → {last.effective_rank:.1f}")
probes = result.probes
st.caption(
    f"Split: {result.split_description()}. Probe classes: the tokens seen at least twice in the fit split "
    f"(current {probes['current'].n_classes}, previous {probes['previous'].n_classes}, next {probes['next'].n_classes}) "
    "plus one 'other' class; probe accuracies count the score positions whose token is a class "
    f"({probes['current'].coverage:.0%}, {probes['previous'].coverage:.0%}, {probes['next'].coverage:.0%} of them). "
    "The nearest-embedding decoder picks among the distinct tokens of the score split; the lens among the whole "
    "vocabulary."
)

st.header("What the residual still knows")
left, right = st.columns(2)
knows = charts.knows_chart(layers)
bits = charts.bits_chart(layers)
left.altair_chart(knows, width="stretch")
right.altair_chart(bits, width="stretch")
st.caption(f"H(next token class) on the score split: {probes['next'].label_entropy_bits:.2f} bits; the bound can "
           "never exceed it. A bound below 0 means the probe overfitted the fit split.")

st.header("Compression")
compression = charts.compression_chart(layers)
st.altair_chart(compression)
st.markdown("**Outlier (massive) dimensions**: a dimension whose largest |value| is at least 20× the median "
            "dimension's, with the tokens that carry it (position: token).")
outliers = frames["outliers"].assign(
    carriers=[" | ".join(f"{p}: {visible(result.tokens[p])}" for p, _ in o.carriers) for o in result.outliers])
st.dataframe(outliers.round(1), width="stretch", hide_index=True, height=min(320, 36 * (len(outliers) + 1)))

st.header("Meaning across languages")
retrieval = frames["retrieval"]
view = Inputs(PAGE, "view", scope=result)
left, right = st.columns([3, 2])
retrieval_chart = charts.retrieval_chart(retrieval, 1 / len(result.concepts))
left.altair_chart(retrieval_chart, width="stretch")
with right:
    pair_layer = view.slider("Layer of the pair heatmap", 0, result.n_layers, peak, "pair_layer")
right.altair_chart(charts.pair_heatmap(retrieval, pair_layer), width="stretch")
st.caption(f"{len(result.concepts)} concepts × {len(result.languages)} languages; a word's representation is "
           "the residual at its last token (the word alone after BOS); dashed line: chance.")

st.header("PCA of one layer")
left, right = st.columns([1, 3])
with left:
    pca_layer = view.slider("Layer", 0, result.n_layers, peak, "pca_layer")
    kind = view.radio("Points", ["word", "token"], "word", "points",
                      format_func={"word": "words, by language", "token": "text tokens, by class"}.get)
view.sync()
pca = charts.pca_chart(result.pca, pca_layer, kind)
right.altair_chart(pca, width="stretch")

st.header("Embeddings and tokens")
left, right = st.columns(2)
n = result.neighbours
with left:
    st.markdown(f"Nearest tokens to **{n.word}** ({' + '.join(visible(t) for t in n.tokens)}), by cosine"
                + (" — this model ties its input and output embeddings, so both lists are the same." if n.tied else "."))
    table = frames["neighbours"].assign(token=lambda f: f["token"].map(visible))
    st.dataframe(table.pivot(index="rank", columns="embedding", values="token").join(
        table.pivot(index="rank", columns="embedding", values="cosine").round(3), rsuffix=" cosine"), width="stretch")
with right:
    per_word = charts.tokens_per_word_chart(frames["tokens_per_word"])
    st.altair_chart(per_word, width="stretch")
    en = result.story_tokens.get("en")
    st.caption("The same story costs " + ", ".join(f"{code} {count}" for code, count in result.story_tokens.items())
               + f" tokens: where it costs more than English's {en}, each token carries less of it.")

st.header("Every layer")
st.dataframe(layers.round(3), width="stretch", hide_index=True)
st.caption("Downloads: the per-layer table, retrieval by language pair, the PCA points (CSV), and the charts (PNG, SVG).")
a, b, c, d = st.columns(4)
downloads(a, "information_layers", frame=layers, chart=knows)
downloads(b, "information_retrieval", frame=retrieval, chart=retrieval_chart)
downloads(c, "information_pca", frame=result.pca, chart=pca)
downloads(d, "information_compression", frame=frames["outliers"], chart=compression)
