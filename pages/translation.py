"""Page: does the model think in English while it translates? (latent language, Wendler et al. 2024)"""

import streamlit as st

from core.analyses import translation
from core.analyses.translation.drill import drill_down
from core.analyses.translation.charts import drill_down_chart, energy_chart, language_curves, slot_label
from core.analyses.translation.prompts import MAX_SHOTS, TASKS
from core.analyses.translation.wordlist import LANGUAGES, WORDS_CSV, parse_words
from core.charts.lens import lens_heatmap, lens_heatmap_frame
from ui.links import Inputs
from ui.model import run_safely
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE = "translation"
st.title("🌐 Translation latent language")
st.markdown(
    "When the model translates a word, say French → Chinese, which language do its **middle layers** decode to? "
    "Few-shot prompts like `Français: \"fleur\" - 中文: \"` are read with the logit lens at the answer position: "
    "per layer, the probability of tokens that begin the answer in the **target** language, in a **latent** "
    "language (English by default) and in the **source** language, averaged over many words with a 95% band. "
    "For Llama-2-7B the published curves show English peaking at 0.68 around layer 23 of 32 before Chinese takes "
    "over in the last layers."
)

# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Translation latent language")
with st.sidebar:
    upload = main.upload("Your own word list (optional): a CSV whose header names language codes, e.g. `fr,zh,en`",
                         ["csv"], "words")
if upload is not None:
    try:
        csv_text, origin = upload.data.decode("utf-8"), upload.name
    except UnicodeDecodeError:
        st.error(f"{upload.name} is not UTF-8 text: save the CSV as UTF-8 and upload it again.")
        st.stop()
else:
    csv_text, origin = WORDS_CSV.read_text(encoding="utf-8"), "assets/words.csv"
words = run_safely(parse_words, csv_text, origin)
codes = list(words.languages)


def language(label: str, default: str, name: str) -> str:
    return main.selectbox(label, codes, default if default in codes else codes[0], name,
                          format_func=lambda c: f"{LANGUAGES[c].english_name} ({LANGUAGES[c].name})")


with main.form("Run the translation lens"):
    source = language("Source language", "fr", "source")
    target = language("Target language", "zh", "target")
    latent = language("Latent language", "en", "latent")
    n_words = main.number_input("Words (first N of the list)", 1, len(words), min(10, len(words)), "n")
    shots = main.number_input("Demonstrations per prompt", 0, MAX_SHOTS, 4, "shots")
    reader = main.radio("Lens", ["logit", "tuned"], "logit", "lens", horizontal=True, help=translation.LENS_ADVICE)
    with st.expander("More options"):
        task = main.selectbox("Task", list(TASKS), list(TASKS)[0], "task",
                              help="translation: source → target; repetition: target → target (the source is ignored); "
                                   "cloze: the translation written as a blank to fill (`___ ⇒ \"…\"`)")
        seed = main.number_input("Seed", 0, 10_000, 0, "seed")
        energy = main.checkbox("Also compute the energy of the last position against the unembedding", False, "energy")

settings = translation.Settings(source=source, target=target, latent=latent, task=task, shots=int(shots),
                                seed=int(seed), limit=int(n_words), energy=energy, words=words, lens=reader)
result = run_analysis(main, "translation", translation.run, settings, button="Run the translation lens")
if result is None:
    st.info(f"{len(words)} words in {origin} ({', '.join(codes)}). Choose languages in the sidebar and press **Run**. "
            + translation.LENS_ADVICE)
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

# -- one word (a view of the result: computed when chosen, kept in the server's memory) --------------------
st.subheader("What is the model predicting internally?")
drill = Inputs(PAGE, "word", label="Translation drill-down", scope=result)
left, right = st.columns([3, 1])
with left:
    word = drill.selectbox(
        "Word", list(range(result.n_words)), 0, "word",
        format_func=lambda i: f"{table['source_word'].iloc[i]} → {table['target_word'].iloc[i]} "
                              f"({slot_label('latent', result.settings).split(': ')[1]}: {table['latent_word'].iloc[i]})",
    )
with right:
    top_k = drill.slider("Top-k per layer", 3, 10, 5, "top_k")
span = drill.radio("Heatmap of the prompt under the logit lens (top-1 token per layer and position)",
                   ["the query line", "the whole prompt"], "the query line", "span", horizontal=True)
detail = run_analysis(drill, "translation.word", lambda h, s, p: drill_down(h, result, s[1], s[2]),
                      (result.settings, int(word), int(top_k)), auto=True, store=False, row=False)
if detail is None:
    st.stop()
st.code(detail.prompt, language=None)
grid = drill_down_chart(detail.table, result.n_layers)
st.altair_chart(grid, width="stretch")
tokens = detail.lens.tokens[0]
query_start = max((i + 1 for i, t in enumerate(tokens) if "\n" in t), default=0)
heatmap_frame = lens_heatmap_frame(detail.lens)
if span == "the query line":
    heatmap_frame = heatmap_frame[heatmap_frame["position"] >= query_start]
heatmap = lens_heatmap(heatmap_frame, result.n_layers)
st.altair_chart(heatmap, width="stretch")
st.caption("Downloads: the top tokens of this word (CSV, PNG, SVG) and its heatmap (CSV, PNG, SVG).")
left, right = st.columns(2)
downloads(left, f"{name}_word_{int(word)}", frame=detail.table, chart=grid)
downloads(right, f"{name}_word_{int(word)}_heatmap", frame=heatmap_frame, chart=heatmap)
