"""Page: does the model think in English while it translates? (latent language, Wendler et al. 2024)"""

import streamlit as st

from core.analyses import translation
from core.analyses.translation.analysis import drill_down
from core.analyses.translation.charts import drill_down_chart, energy_chart, language_curves, slot_label
from core.analyses.translation.prompts import MAX_SHOTS, TASKS
from core.analyses.translation.wordlist import LANGUAGES, WORDS_CSV, parse_words
from core.charts.lens import lens_heatmap, lens_heatmap_frame
from ui.model import current_model, model_key, run_safely
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("🌐 Translation latent language")
st.markdown(
    "When the model translates a word, say French → Chinese, which language do its **middle layers** decode to? "
    "Few-shot prompts like `Français: \"fleur\" - 中文: \"` are read with the logit lens at the answer position: "
    "per layer, the probability of tokens that begin the answer in the **target** language, in a **latent** "
    "language (English by default) and in the **source** language, averaged over many words with a 95% band. "
    "For Llama-2-7B the published curves show English peaking at 0.68 around layer 23 of 32 before Chinese takes "
    "over in the last layers."
)

handle = current_model()


@st.cache_data(show_spinner=False, max_entries=64)
def drill_down_of(key: str, settings: translation.Settings, word: int, top_k: int, _handle, _result):
    return drill_down(_handle, _result, word, top_k)


upload = st.file_uploader("Your own word list (optional): a CSV whose header names language codes, e.g. `fr,zh,en`",
                          type=["csv"])
if upload is not None:
    try:
        csv_text, origin = upload.getvalue().decode("utf-8"), upload.name
    except UnicodeDecodeError:
        st.error(f"{upload.name} is not UTF-8 text: save the CSV as UTF-8 and upload it again.")
        st.stop()
else:
    csv_text, origin = WORDS_CSV.read_text(encoding="utf-8"), "assets/words.csv"
words = run_safely(parse_words, csv_text, origin)
codes = list(words.languages)


def language_choice(label: str, default: str, column, key: str) -> str:
    index = codes.index(default) if default in codes else 0
    return column.selectbox(label, codes, index=index, key=key,
                            format_func=lambda c: f"{LANGUAGES[c].english_name} ({LANGUAGES[c].name})")


with st.form("translation"):
    left, middle, right = st.columns(3)
    source = language_choice("Source language", "fr", left, "tr_source")
    target = language_choice("Target language", "zh", middle, "tr_target")
    latent = language_choice("Latent language", "en", right, "tr_latent")
    left, middle, right, last = st.columns(4)
    task = left.selectbox("Task", TASKS, help="translation: source → target; repetition: target → target "
                          "(the source is ignored); cloze: the translation written as a blank to fill (`___ ⇒ \"…\"`)")
    n_words = middle.number_input("Words (first N of the list)", 1, len(words), min(10, len(words)))
    shots = right.number_input("Demonstrations per prompt", 0, MAX_SHOTS, 4)
    seed = last.number_input("Seed", 0, 10_000, 0)
    left, right = st.columns([1, 2])
    energy = left.checkbox("Also compute the energy of the last position against the unembedding")
    reader = right.radio("Lens", ["logit", "tuned"], horizontal=True, help=translation.LENS_ADVICE)
    st.caption(translation.LENS_ADVICE)
    submitted = st.form_submit_button("Run the translation lens", type="primary")

settings = translation.Settings(source=source, target=target, latent=latent, task=task, shots=int(shots),
                                seed=int(seed), limit=int(n_words), energy=energy, words=words, lens=reader)
result = run_analysis("translation", translation.run, handle, settings, submitted=submitted,
                      button="Run the translation lens")
if result is None:
    st.info(f"{len(words)} words in {origin} ({', '.join(codes)}). Choose languages and press **Run**.")
    st.stop()

summary = result.summary()
a, b, c, d = st.columns(4)
a.metric("Words used", result.n_words)
b.metric("Dropped", result.n_dropped)
c.metric(f"Latent peak ({result.settings.latent})", f"{summary.latent_peak:.2f}", f"layer {summary.latent_peak_layer}",
         delta_color="off")
d.metric("Target overtakes at layer",
         "never" if summary.target_overtakes_at is None else str(summary.target_overtakes_at))
if result.n_dropped:
    with st.expander(f"{result.n_dropped} dropped word(s): "
                     + ", ".join(f"{reason} ({n})" for reason, n in result.drop_reasons().items())):
        st.dataframe(result.dropped, hide_index=True, width="stretch")
if result.n_two_piece:
    st.caption(f"{result.n_two_piece} word(s) begin with a character the tokenizer spells in pieces; they count "
               "by their first two pieces (teacher-forcing the first), so scripts sharing a first byte stay apart.")

frames = result.frames()
chart = language_curves(frames["curves"], result.settings, result.n_words)
st.altair_chart(chart, width="stretch")
energy_plot = energy_chart(frames["curves"]) if result.energy is not None else None
if energy_plot is not None:
    st.altair_chart(energy_plot, width="stretch")

st.subheader("Every word")
table = frames["words"]
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"prompt": st.column_config.TextColumn("prompt", width="large")})
name = f"translation_{result.settings.source}_{result.settings.target}"
st.caption("Downloads: per word × layer with prompts (CSV), the curves (CSV, PNG, SVG)"
           + (", the energy (PNG, SVG)" if energy_plot is not None else "") + ".")
columns = st.columns(3)
downloads(columns[0], f"{name}_words", frame=frames["word_layers"])
downloads(columns[1], name, frame=frames["curves"], chart=chart)
if energy_plot is not None:
    downloads(columns[2], f"{name}_energy", chart=energy_plot)

st.subheader("What is the model predicting internally?")
word = st.selectbox(
    "Word", range(result.n_words),
    format_func=lambda i: f"{table['source_word'].iloc[i]} → {table['target_word'].iloc[i]} "
                          f"({slot_label('latent', result.settings).split(': ')[1]}: {table['latent_word'].iloc[i]})",
)
top_k = st.slider("Top-k per layer", 3, 10, 5)
detail = run_safely(drill_down_of, model_key(), result.settings, int(word), int(top_k), handle, result)
st.code(detail.prompt, language=None)
grid = drill_down_chart(detail.table, handle.n_layers)
st.altair_chart(grid, width="stretch")
tokens = detail.lens.tokens[0]
query_start = max((i + 1 for i, t in enumerate(tokens) if "\n" in t), default=0)
span = st.radio("Heatmap of the prompt under the logit lens (top-1 token per layer and position)",
                ["the query line", "the whole prompt"], horizontal=True)
heatmap_frame = lens_heatmap_frame(detail.lens)
if span == "the query line":
    heatmap_frame = heatmap_frame[heatmap_frame["position"] >= query_start]
heatmap = lens_heatmap(heatmap_frame, handle.n_layers)
st.altair_chart(heatmap, width="stretch")
st.caption("Downloads: the top tokens of this word (CSV, PNG, SVG) and its heatmap (CSV, PNG, SVG).")
left, right = st.columns(2)
downloads(left, f"{name}_word_{int(word)}", frame=detail.table, chart=grid)
downloads(right, f"{name}_word_{int(word)}_heatmap", frame=heatmap_frame, chart=heatmap)
