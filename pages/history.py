"""Page: History. The runs kept on this server, newest first: open one through its link, pin it with a title and
a note, download its bundle, copy its command line, delete it."""

import datetime
import re
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import streamlit as st

from ui.links import MODEL_PARAMS, RUN, Inputs
from ui.shell import page_title, require_shell
from ui.stored import describe, result_store, stored_bundle

require_shell()  # a deep link to a fresh server runs this file alone: go through the app

st.title("🗂️ History")
st.markdown(
    "Every run on this server, newest first, whoever made it: the page, the model, its settings in one line, when "
    "and how long it took. **Open** reopens the page with exactly those settings and that result (read from here, "
    "no forward pass); pin a run to keep it whatever the store's size limit, with a title and a note for the team; "
    "download it as one zip (settings, JSON, tables, charts, command line), or run it again from the command line."
)

store = result_store()
if store is None:
    st.info("History is off on this server (LAYERSCOPE_HISTORY=off): no result is kept.")
    st.stop()
everything = store.list(limit=5000)

filters = Inputs("history", label="History")
with st.sidebar:
    st.header("Filter")
    pages = sorted({e.page for e in everything})
    page = filters.selectbox("Page", ["all"] + pages, "all", "page", format_func=lambda p: p if p == "all" else page_title(p))
    models = sorted({e.model for e in everything})
    model = filters.selectbox("Model", ["all"] + models, "all", "model")
    pinned_only = filters.checkbox("Pinned only", False, "pinned")
filters.sync()

entries = [e for e in everything if page in ("all", e.page) and model in ("all", e.model) and (e.pinned or not pinned_only)]
if not entries:
    st.info("No runs kept yet" + (" that match the filter" if everything else "") + ": run an analysis on any page, "
            "or `python -m core <analysis> --store` from the command line.")
    st.stop()

root = re.sub(r"/history/?$", "", st.context.url or "")


def summary(entry) -> str:
    """The settings as the page's link wrote them (only what differs from the page's defaults), else all of them."""
    if entry.link:
        query = [(k, v) for k, v in parse_qsl(urlsplit(entry.link).query, keep_blank_values=True)
                 if k not in MODEL_PARAMS and k != RUN]
        text = " · ".join(f"{k}={v[:40] + '…' if len(v) > 40 else v}" for k, v in query) or "the page's defaults"
        return text[:160]
    return describe(entry.settings)


def when(entry) -> str:
    return datetime.datetime.fromtimestamp(entry.created).strftime("%Y-%m-%d %H:%M:%S")


def url(entry) -> str | None:
    return f"{root}/{entry.link.lstrip('/')}" if entry.link else None


table = pd.DataFrame({
    "when": [when(e) for e in entries],
    "page": [page_title(e.page) for e in entries],
    "analysis": [e.analysis for e in entries],
    "model": [e.model for e in entries],
    "settings": [summary(e) for e in entries],
    "seconds": [round(e.seconds, 1) for e in entries],
    "pinned": [("📌 " + (e.title or "pinned")) if e.pinned else "" for e in entries],
    "open": [url(e) for e in entries],
    "command line": [e.cli for e in entries],
})
st.dataframe(table, hide_index=True, width="stretch", height=min(560, 36 * (len(table) + 1)),
             column_config={"open": st.column_config.LinkColumn("open", display_text="open ↗"),
                            "settings": st.column_config.TextColumn("settings", width="large")})
st.caption(f"{len(entries)} of {len(everything)} runs kept ({store.size_bytes() / 2**20:.1f} MB); the least recently "
           "opened unpinned ones go when the store passes its size limit (LAYERSCOPE_RESULTS_MB).")

# -- one run ------------------------------------------------------------------------------------------------
st.header("One run")
by_id = {e.id: e for e in entries}
chosen = st.selectbox("Run", list(by_id), key="history_run",  # labels stay unique: the widget keeps its label
                      format_func=lambda i: f"{when(by_id[i])} · {page_title(by_id[i].page)} ({by_id[i].analysis}) · "
                                            f"{by_id[i].model} · {summary(by_id[i])[:80]} · #{i}")
entry = by_id[chosen]
with st.container(horizontal=True):
    if url(entry):
        st.link_button("Open ↗", url(entry), type="primary")
    st.download_button("⬇ Bundle (.zip)", lambda: stored_bundle(entry.id), file_name=f"{entry.analysis}-{entry.id}.zip",
                       mime="application/zip", key=f"history:bundle:{entry.id}", on_click="ignore")
    if st.button("Delete", key=f"history:delete:{entry.id}", help="Removes this run from the server's store"):
        store.delete(entry.id)
        st.rerun()
st.markdown(f"**{page_title(entry.page)}** ({entry.analysis}) on **{entry.model}**, {when(entry)}, "
            f"{entry.seconds:.1f} s" + (f" · 📌 **{entry.title}**" if entry.pinned else ""))
if entry.note:
    st.markdown(f"> {entry.note}")
st.code(entry.cli or "(no command line says these settings)", language="bash", wrap_lines=True)
with st.expander("Every setting"):
    st.json(entry.settings, expanded=False)
with st.form(f"history:pin:{entry.id}", border=False):
    title = st.text_input("Title", value=entry.title, placeholder="e.g. Paris appears at layer 14")
    note = st.text_area("Note", value=entry.note, height=80, placeholder="what a teammate should look at")
    left, right = st.columns(2)
    pin = left.form_submit_button("Pin" if not entry.pinned else "Save title and note")
    unpin = right.form_submit_button("Unpin", disabled=not entry.pinned)
if pin:
    store.pin(entry.id, title=title.strip(), note=note.strip())
    st.rerun()
if unpin:
    store.unpin(entry.id)
    st.rerun()
