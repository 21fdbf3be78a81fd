"""What pages share around one core call: running it with a progress bar, keeping its result across
reruns with a caption when the settings changed since, and downloads (CSV, PNG, SVG)."""

from __future__ import annotations

from typing import Any, Callable, Hashable

import streamlit as st

from core import export
from ui.model import model_key, run_safely

STALE = "The settings changed since these results: press **{button}** to update them."


def run_with_progress(fn: Callable, *args, **kwargs):
    """``fn(*args, progress=..., **kwargs)`` with a progress bar that goes when it is done; errors as st.error."""
    bar = st.progress(0.0, text="Starting…")
    try:
        return run_safely(fn, *args, progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m), **kwargs)
    finally:
        bar.empty()


def run_analysis(name: str, run: Callable, handle, settings, *, submitted: bool, button: str = "Run",
                 extra: Hashable = None) -> Any | None:
    """The page's one core call and its stored result.

    When ``submitted``, runs ``run(handle, settings, progress)`` and stores the result under ``name``
    keyed by (model, settings, extra); returns the stored result (None before the first run), with a
    caption when the model or settings have changed since it was computed.
    """
    request = (model_key(), settings, extra)
    slot = f"result:{name}"
    if submitted:
        run_safely(settings.validate)
        st.session_state[slot] = (request, run_with_progress(run, handle, settings))
    stored = st.session_state.get(slot)
    if stored is None:
        return None
    if stored[0] != request:
        st.caption(STALE.format(button=button))
    return stored[1]


def stored_result(name: str, request: Hashable, button: str = "Run") -> Any | None:
    """A result kept with ``keep_result`` (None if none), with the stale caption when ``request`` differs."""
    stored = st.session_state.get(f"result:{name}")
    if stored is None:
        return None
    if stored[0] != request:
        st.caption(STALE.format(button=button))
    return stored[1]


def keep_result(name: str, request: Hashable, result: Any) -> Any:
    st.session_state[f"result:{name}"] = (request, result)
    return result


def downloads(column, name: str, *, frame=None, chart=None, key: str | None = None) -> None:
    """Download buttons in ``column``: the table as CSV, the chart as PNG and SVG. Images are rendered only
    when a button is pressed (a rerun renders nothing), and the press does not rerun the page."""
    key = key or name
    if frame is not None:
        column.download_button("CSV", export.csv_bytes(frame), file_name=f"{name}.csv", mime="text/csv",
                               key=f"{key}:csv", on_click="ignore")
    if chart is not None and export.can_render():
        spec = chart.to_json()  # fixed now: the chart object may change before the press
        column.download_button("PNG", lambda: export.png_bytes(spec), file_name=f"{name}.png", mime="image/png",
                               key=f"{key}:png", on_click="ignore")
        column.download_button("SVG", lambda: export.svg_bytes(spec), file_name=f"{name}.svg", mime="image/svg+xml",
                               key=f"{key}:svg", on_click="ignore")
