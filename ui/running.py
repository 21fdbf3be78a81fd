"""One analysis run on the server's queue: the visitor's place in line, live; a progress bar; a Cancel button.

Runs on one model take turns (``core.queue``): a waiting session sees "2 runs ahead of yours on gemma-3-270m:
Sequence continuation, running for 40 s; …", refreshed every quarter second. The run itself happens in the
visitor's script run, so Cancel is an ordinary button: pressing it asks Streamlit to rerun the script, which
stops this run before the next module of its forward pass (``core.interventions.interrupts``: the pending
request is met by the progress bar's Streamlit call, which stops the script) or, while it waits, at its next
refresh; the ticket leaves the line on the way out and the next run starts at once. Nothing of a cancelled
run is kept. A visitor who closes the tab stops their waiting run the same way (Streamlit stops the session's
script). A *running* analysis whose visitor left goes on to the end without drawing anything, so its result
still reaches the store and History (the queue never drops a running ticket either).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

from core.interventions.interrupts import interruptible
from core.queue import Cancelled, run_queue


def session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def session_alive(session: str) -> bool:
    """Whether the visitor's browser is still connected (always, outside a server: AppTest, bare scripts)."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return True
    return Runtime.instance().is_active_session(session)


def _cancelled(slot: str) -> None:
    st.session_state[f"{slot}:cancelled"] = True


def run_in_queue(slot: str, label: str, model: str, run: Callable[..., Any], handle, settings,
                 recheck: Callable[[], Any] | None = None) -> tuple[Any, float] | None:
    """``run(handle, settings, progress)`` when this session's turn on ``model`` comes: (result, seconds), or
    None when ``recheck()`` found the result meanwhile (a run ahead computed the same thing).

    ``Cancelled`` (a UserError) when the ticket is cancelled through the queue; a Cancel press stops the script
    run itself (Streamlit's rerun), so this function never returns then."""
    session = session_id()
    status = st.empty()
    with status.container():
        line = st.empty()
        st.button("Cancel", key=f"{slot}:cancel", on_click=_cancelled, args=(slot,),
                  help="Stops this run at its next step (or takes it out of the line); nothing of it is kept.")
    detached = [False]

    def show_place(ticket) -> None:
        message = ticket.message()
        if message:
            line.info(f"⏳ {message}. Yours starts when they are done.")

    def report(fraction: float, message: str) -> None:
        if detached[0]:
            return
        try:
            line.progress(min(max(float(fraction), 0.0), 1.0), text=message or label)
        except StopException:
            if session_alive(session):
                raise  # the visitor pressed Stop
            detached[0] = True  # the tab closed: finish without drawing, so the result is still kept

    requests = getattr(get_script_run_ctx(), "script_requests", None)
    last, met = [0.0, label], [0.0]

    def pending() -> None:
        """Between two modules of a forward: a Cancel press (a rerun or stop request waiting for this script run)
        is acted on now, by the Streamlit call that would have met it at the next progress report (at most every
        50 ms: a fragment's rerun, which does not stop the script, leaves the request pending)."""
        if requests is None or detached[0] or requests._state == ScriptRequestType.CONTINUE:
            return
        now = time.monotonic()
        if now - met[0] >= 0.05:
            met[0] = now
            report(*last)

    def keep(fraction: float, message: str) -> None:
        last[:] = [fraction, message]
        report(fraction, message)

    ticket = run_queue().ticket(model, label, session, on_wait=show_place, alive=lambda: session_alive(session))
    with ticket, interruptible(pending):
        if recheck is not None and recheck() is not None:
            status.empty()
            return None
        line.progress(0.0, text=f"{label}: starting…")
        started = time.perf_counter()
        result = run(handle, settings, ticket.progress(keep))
        seconds = time.perf_counter() - started
    if not detached[0]:
        status.empty()
    return result, seconds


__all__ = ["Cancelled", "run_in_queue", "session_alive", "session_id"]
