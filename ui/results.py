"""One way to a result on every page: ``run_analysis`` (found in the store or computed in the queue, kept across
reruns, one stale caption, one row with the link and the bundle) and per-chart downloads (CSV, PNG, SVG).

A page is widgets → ``run_analysis(inputs, analysis, run, settings)`` → charts. For each section of a page (the
main analysis, an attribution, a drill-down…) ``run_analysis``:

1. shows the session's last result of the section, with a caption when the widgets or the model changed since;
2. when the section's button was pressed, or a link being opened shows the section, or the section computes
   itself (``auto``, for cheap views) and its request changed: validates the settings (a link's refused settings
   give one line and the default widgets), then looks the result up in the server's store by its settings and
   its model's fingerprint, **without waiting for the model** when this server remembers the fingerprint the
   model had when last loaded; else waits for the model, takes a place in the model's queue (place and Cancel
   on screen), runs, and stores the result (History lists it) with its link;
3. confirms a result found before the model was loaded once it is loaded: same fingerprint, or computed again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from core import export
from core.errors import UserError
from core.results.keys import settings_json
from ui.links import Inputs, page_url, relative
from ui.model import chosen_model, current_model, loaded_model, run_safely
from ui.running import Cancelled, run_in_queue
from ui import stored

STALE = "The settings changed since these results: press **{button}** to update them."


@dataclass
class Shown:
    """A section's result as the session holds it."""

    request: tuple  # (model key, settings, other models): compared with the widgets' request
    result: Any
    analysis: str
    keyed: Any  # the settings as stored (with the other models' specs, for a comparison)
    model: str
    fingerprint: str | None
    origin: str  # "computed" | "store" | "memory"
    seconds: float
    created: float = field(default_factory=time.time)
    id: str | None = None  # in the store
    provisional: bool = False  # found with a remembered fingerprint, before the model was loaded
    link: str = ""
    note: str = ""


def run_analysis(inputs: Inputs, analysis: str, run: Callable, settings: Any, *, button: str = "Run",
                 auto: bool = False, store: bool = True, others: dict[str, str] | None = None,
                 needs_model: bool = True, row: bool = True) -> Any | None:
    """The section's one core call and its result (None before the first run); see the module docstring.

    ``run(handle, settings, progress)``; ``others``: other models the run reads ({"model_b": spec}), part of the
    result's identity; ``store=False`` keeps results in the server's memory only (views); ``needs_model=False``
    for runs that bring their own model (training)."""
    inputs.check()
    choice = chosen_model()
    request = (choice.key if needs_model else "", settings, tuple(sorted((others or {}).items())))
    slot = f"result:{inputs.page}:{inputs.section}"
    shown: Shown | None = st.session_state.get(slot)
    declined = st.session_state.setdefault("_declined", {})
    if st.session_state.pop(f"{slot}:cancelled", False):
        st.info(f"Cancelled: nothing of that {inputs.label} run was kept.")
        declined[slot] = request
    note = ""
    if shown is not None and shown.provisional:
        note = _confirm(shown, choice, others)
        if note:
            shown = None
    want = inputs.submitted or inputs.armed or bool(note) or (
        auto and (shown is None or shown.request != request) and declined.get(slot) != request)
    if want and not (shown is not None and shown.request == request and not inputs.submitted):
        declined.pop(slot, None)
        try:
            getattr(settings, "validate", lambda: None)()
        except UserError as err:
            if inputs.armed:
                inputs.refuse(str(err))  # a link's settings: one line, the page's defaults (reruns)
            st.error(str(err))
            st.stop()
        params = inputs.link_params(choice.params(), shown=True)
        if inputs.submitted or auto:
            inputs.write(inputs.link_params(choice.params(), shown=False))
        keyed = settings if not others else {"settings": settings_json(settings), **others}
        shown = _obtain(inputs, slot, analysis, run, settings, keyed, request, others, store, needs_model,
                        link=relative(page_url(params)), note=note)
        st.session_state[slot] = shown
    if shown is None:
        inputs.mark(False)
        return None
    stale = shown.request != request
    inputs.mark(not stale)
    if stale:
        st.caption(STALE.format(button=button))
    if row and needs_model:
        result_row(inputs, shown)
    return shown.result


def _confirm(shown: Shown, choice, others) -> str:
    """For a result found before its model was loaded: "" once confirmed (or while still loading), else why
    it is computed again."""
    if shown.request[0] != choice.key:  # the sidebar names another model now: the result is only stale
        return ""
    if loaded_model(choice) is None or any(loaded_model(stored.other_choice(s)) is None for s in (others or {}).values()):
        return ""
    settings = shown.request[1]
    fp, provisional = stored.fingerprint(choice, settings, others)
    if fp == shown.fingerprint:
        shown.provisional = provisional
        return ""
    return "The model's weights changed since this result was stored: computed again."


def _obtain(inputs: Inputs, slot: str, analysis: str, run: Callable, settings, keyed, request, others, store: bool,
            needs_model: bool, link: str, note: str) -> Shown:
    """The result: from the store (or memory) if there, else computed in the queue and kept."""
    choice = chosen_model()
    fp, provisional = stored.fingerprint(choice, settings, others) if needs_model else (None, False)

    def look(fp, provisional) -> Shown | None:
        if fp is None:
            return None
        if not store:
            result = stored.remembered(stored.memory_key(analysis, keyed, fp))
            return None if result is None else Shown(request, result, analysis, keyed, choice.spec, fp, "memory", 0.0)
        found = stored.find(analysis, keyed, fp)
        if found is None:
            return None
        entry, result = found
        return Shown(request, result, analysis, keyed, entry.model, fp, "store", entry.seconds, entry.created, entry.id,
                     provisional, entry.link or link, note)

    hit = look(fp, provisional)
    if hit is not None:
        return hit
    if inputs.armed and store and not note:
        note = "This link's result was not stored on this server (or the model changed since): computed again."
    if not needs_model:  # a run that brings its own model (training): no queue, nothing kept beyond the session
        started = time.perf_counter()
        result = run_safely(run, None, settings, None)
        return Shown(request, result, analysis, keyed, "", None, "computed", time.perf_counter() - started, link=link)
    handle = current_model()
    if needs_model:
        fp, provisional = stored.fingerprint(choice, settings, others, handle)
        hit = look(fp, provisional)  # the remembered fingerprint was unknown or stale
        if hit is not None:
            return hit

    def attempt():
        try:
            return run_in_queue(slot, inputs.label, choice.spec, run, handle, settings,
                                recheck=lambda: look(fp, False) if store else None)
        except Cancelled:  # through the queue (not the button, which stops this script run itself)
            return "cancelled"
        except UserError as err:
            if inputs.armed:  # a link's settings the model refuses (a prompt over its token cap…): the defaults
                inputs.refuse(str(err))
            raise

    done = run_safely(attempt)
    if done == "cancelled":
        st.info(f"Cancelled: nothing of that {inputs.label} run was kept.")
        st.stop()
    if done is None:  # a run ahead of ours computed the same result
        return look(fp, False)
    result, seconds = done
    id = None
    if fp is not None and store:
        id = stored.keep(analysis, keyed, fp, result, seconds, choice.spec, link)
    elif fp is not None:
        stored.remember(stored.memory_key(analysis, keyed, fp), result)
    return Shown(request, result, analysis, keyed, choice.spec, fp, "computed", seconds, id=id, link=link, note=note)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def result_row(inputs: Inputs, shown: Shown) -> None:
    """One line under a section's header: where its result comes from, the link to it, its bundle."""
    if shown.origin == "store":
        origin = (f"From this server's store (computed {_ago(time.time() - shown.created)} in {shown.seconds:.1f} s): "
                  "no forward pass.")
        if shown.provisional:
            origin += " The model is still loading: the result is confirmed once it is loaded."
    elif shown.origin == "memory":
        origin = "Computed earlier on this server."
    else:
        origin = f"Computed in {shown.seconds:.1f} s" + ("; History lists it." if shown.id else ".")
    text, link, bundle = st.columns([7, 1.4, 1.6], vertical_alignment="center")
    text.caption(" ".join(x for x in (shown.note, origin) if x))
    with link.popover("🔗 Copy link", width="stretch"):
        st.code(page_url(), language=None, wrap_lines=True)
        st.caption("Anyone who opens this link on this server sees these settings and this result "
                   "(read from the store, or computed again).")
    if not hasattr(shown.result, "to_json") or not hasattr(shown.result, "frames"):
        return
    info = {"id": shown.id, "seconds": round(shown.seconds, 3), "fingerprint": shown.fingerprint}
    bundle.download_button("⬇ Bundle (.zip)", lambda: stored.bundle_bytes(shown.analysis, shown.keyed, shown.result,
                                                                          shown.model, info),
                           file_name=f"{inputs.section}-{shown.id or 'result'}.zip", mime="application/zip",
                           key=f"result:{inputs.page}:{inputs.section}:bundle", on_click="ignore", width="stretch",
                           help="Settings, the CLI's JSON, every table (CSV), every chart (PNG, SVG), the command line")


def downloads(column, name: str, *, frame=None, chart=None, key: str | None = None) -> None:
    """Download buttons in ``column``: the table as CSV, the chart as PNG and SVG. Images are rendered only
    when a button is pressed (a rerun renders nothing), and the press does not rerun the page."""
    key = key or name
    if frame is not None:
        column.download_button("CSV", export.csv_bytes(frame), file_name=f"{name}.csv", mime="text/csv",
                               key=f"{key}:csv", on_click="ignore")
    if chart is not None and export.can_render():
        spec = chart.to_json(validate=False)  # fixed now (the chart may change before the press); drawn = valid
        column.download_button("PNG", lambda: export.png_bytes(spec), file_name=f"{name}.png", mime="image/png",
                               key=f"{key}:png", on_click="ignore")
        column.download_button("SVG", lambda: export.svg_bytes(spec), file_name=f"{name}.svg", mime="image/svg+xml",
                               key=f"{key}:svg", on_click="ignore")
