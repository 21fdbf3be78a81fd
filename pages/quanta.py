"""Page: quanta discovery, clustering the tokens a model predicts well by the gradients they induce."""

import streamlit as st

from core.analyses import quanta
from core.analyses.quanta import INDUCTION_FILTERS, PARAMETER_SUBSETS, corpus_from_bytes, corpus_names, describe_corpus
from core.analyses.quanta.charts import (
    loss_histogram,
    loss_histogram_frame,
    rank_frequency_chart,
    rank_frequency_frame,
    similarity_heatmap,
)
from core.analyses.quanta.export import cluster_title, export_html, samples_html
from core.export import csv_bytes
from ui.links import Inputs
from ui.results import downloads, run_analysis
from ui.shell import require_shell

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

PAGE, UPLOAD = "quanta", "upload a file…"
st.title("🧩 Quanta")
st.markdown(
    "Which *skills* does the model use to predict the tokens it gets right? Following Michaud et al. "
    "(“The Quantization Model of Neural Scaling”), we take tokens the model predicts with low loss, compute the "
    "gradient of each token's loss with respect to every weight except embeddings and norms, and cluster the "
    "tokens by the cosine similarity of those gradients: tokens in one cluster lean on the same part of the "
    "network, a candidate *quantum*. Losses and gradients are cached on disk, so a second run, or a different "
    "number of clusters, takes seconds."
)

# -- inputs (sidebar) ---------------------------------------------------------------------------------------
main = Inputs(PAGE, label="Quanta")
with main.form("Find quanta"):
    corpus_choice = main.selectbox("Corpus", corpus_names() + [UPLOAD], corpus_names()[0], "corpus",
                                   format_func=lambda n: n if n == UPLOAD else f"{n}: {describe_corpus(n)}")
    upload = main.upload("Your corpus (.txt split at blank lines, or .jsonl with a \"text\" field)", ["txt", "jsonl"],
                         "upload")
    tokens = main.number_input("Tokens to cluster (cap on the sample)", 4, 5000, 32, "tokens", step=4)
    n_clusters = main.number_input("Clusters", 2, 1000, 5, "clusters")
    threshold = main.number_input("Loss threshold", 0.001, 20.0, 0.5, "threshold", step=0.05, format="%.3f")
    with st.expander("More options"):
        max_length = main.number_input("Tokens per document (documents are cut there)", 8, 1024, 48, "max_length", step=8)
        unit = main.radio("Unit", ["nats", "bits"], "nats", "unit", horizontal=True)
        induction = main.selectbox("Drop tokens that complete an n-gram seen earlier in the document",
                                   list(INDUCTION_FILTERS), list(INDUCTION_FILTERS)[0], "induction",
                                   help="Michaud et al. drop trigrams (induction)")
        params = main.selectbox("Gradient of", list(PARAMETER_SUBSETS), list(PARAMETER_SUBSETS)[0], "params",
                                format_func=lambda p: f"{p}: {PARAMETER_SUBSETS[p]}")
        proj_dim = main.select_slider("Sketch dimensions", [256, 512, 1024, 2048, 4096, 8192], 2048, "proj_dim")
        documents = main.number_input("Documents to score (0 = until twice the cap pass the filters)", 0, 100000, 0,
                                      "documents")
        seed = main.number_input("Seed (sampling and clustering)", 0, 2**31 - 1, 0, "seed")

if corpus_choice == UPLOAD and upload is None:
    if main.submitted:
        st.warning("Choose a .txt or .jsonl file to upload, or pick the shipped corpus.")
    corpus = None
elif corpus_choice == UPLOAD:
    corpus = main.checked(lambda: corpus_from_bytes(upload.name, upload.data))
else:
    corpus = corpus_choice
settings = quanta.Settings(
    corpus=corpus or corpus_choice, max_length=int(max_length), tokens=int(tokens), loss_threshold=float(threshold),
    unit=unit, induction=induction, documents=int(documents) or None, params=params, proj_dim=int(proj_dim),
    n_clusters=int(n_clusters), seed=int(seed),
)
result = run_analysis(main, "quanta", quanta.run, settings, button="Find quanta") if corpus is not None else None
if result is None:
    st.info("Set the options in the sidebar and press **Find quanta**. The defaults take well under a minute on a "
            "laptop CPU.")
    st.stop()

s = result.settings
cols = st.columns(6)
cols[0].metric("Documents scored", f"{result.n_documents_scored} / {result.n_documents}")
cols[1].metric("Tokens scored", f"{result.n_scored:,}")
cols[2].metric(f"Loss < {s.loss_threshold:g} {s.unit}", f"{result.n_below_threshold:,}")
cols[3].metric(f"After {s.induction} filter", f"{result.n_after_induction:,}")
cols[4].metric("Clustered", f"{result.n_tokens:,}")
cols[5].metric("Rank-frequency slope", "n/a" if result.rank_frequency_slope != result.rank_frequency_slope
               else f"{result.rank_frequency_slope:.2f}")
st.caption(
    f"Gradients of {result.n_params:,} parameters ({s.params}) sketched to {s.proj_dim} dimensions: "
    f"{result.gradients_computed} computed, {result.gradients_cached} from the cache; "
    f"time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
)
for note in result.notes:
    st.warning(note)

histogram_frame = loss_histogram_frame(result.losses_nats, s.unit)
histogram = loss_histogram(histogram_frame, s.loss_threshold, s.unit)
st.altair_chart(histogram, width="stretch")

# -- the cluster browser ------------------------------------------------------------------------------------
st.subheader("Clusters")
n = len(result.clusters)
view = Inputs(PAGE, "view", scope=result)
cluster_key = view.key("cluster")


def step(delta: int) -> None:
    st.session_state[cluster_key] = (st.session_state.get(cluster_key, 0) + delta) % n


nav_prev, nav_pick, nav_next = st.columns([1, 6, 1])
nav_prev.button("◀ Previous", on_click=step, args=(-1,), shortcut="left", help="or the left arrow key",
                width="stretch")
nav_next.button("Next ▶", on_click=step, args=(1,), shortcut="right", help="or the right arrow key", width="stretch")
with nav_pick:
    chosen = view.selectbox("Cluster", list(range(n)), 0, "cluster", format_func=lambda c: cluster_title(result, c),
                            label_visibility="collapsed")
view.sync()
cluster = result.clusters[chosen]
st.markdown(
    f"**Cluster {cluster.id}** ({cluster.id + 1} of {n}): {cluster.size} tokens, mean loss "
    f"{cluster.mean_loss_nats:.3f} nats. Most common answers: "
    + " · ".join(f"`{a.replace(chr(10), '⏎') or '∅'}` ×{k}" for a, k in cluster.top_answers)
    + ". Documents: " + ", ".join(f"{k} ({m})" for k, m in cluster.kinds)
)
st.html(samples_html(result, cluster, 30))

frames = result.frames()
left, right = st.columns(2)
with left:
    sizes_frame = rank_frequency_frame([c.size for c in result.clusters], result.rank_frequency_slope)
    sizes_chart = rank_frequency_chart(sizes_frame, result.rank_frequency_slope)
    st.altair_chart(sizes_chart, width="stretch")
with right:
    similarity_chart = similarity_heatmap(frames["similarity"])
    st.altair_chart(similarity_chart, width="stretch")

st.dataframe(frames["clusters"], width="stretch", hide_index=True)

d1, d2, d3 = st.columns(3)
d1.download_button("Download all clusters as HTML", export_html(result).encode("utf-8"),
                   file_name="quanta.html", mime="text/html")
d2.download_button("Download tokens as CSV", csv_bytes(frames["tokens"]), file_name="quanta_tokens.csv", mime="text/csv")
d3.download_button("Download clusters as CSV", csv_bytes(frames["clusters"]), file_name="quanta_clusters.csv",
                   mime="text/csv")
st.caption("Charts: the data (CSV) and the picture (PNG, SVG) of the loss histogram, the rank-frequency plot and "
           "the similarity heatmap.")
c1, c2, c3 = st.columns(3)
downloads(c1, "quanta_losses", frame=histogram_frame, chart=histogram)
downloads(c2, "quanta_rank_frequency", frame=sizes_frame, chart=sizes_chart)
downloads(c3, "quanta_similarity", frame=frames["similarity"], chart=similarity_chart)
