"""The app shell every page runs inside: navigation and the shared sidebar come from streamlit_app.py.

A deep link as a fresh server's first request (a bookmark of /translation after a restart) makes
Streamlit run the page file by itself: with a ``pages/`` folder beside the entry script it starts in
its old folder-based mode, and switches to ``st.navigation`` only once the entry script has run. The
page would then show raw file names and no model picker. ``require_shell()`` notices that mode and
runs the entry script in its place, in the same script run (so a button press that came with the
request is not lost, as it would be with a rerun): the entry script's ``st.navigation`` resolves the
same page (both modes name a page by its file name) and runs it inside the shell; the stand-alone
run then stops.
"""

from __future__ import annotations

import contextlib
import runpy
import threading
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

# Whether streamlit_app.py is running in this thread's script run (a script run stays in one thread).
# Streamlit's own mode flag is a class attribute shared by every session, so it cannot tell.
_RUN = threading.local()
_TITLES: dict[str, str] = {}  # page name (its file's stem, as History and links name it) -> title


@contextlib.contextmanager
def shell(pages=()):
    """Wraps the entry script's navigation: pages run inside it know the shell is there (and their titles)."""
    for page in pages:
        _TITLES[getattr(page, "_url_path", "") or page.url_path] = page.title
    _RUN.active = True
    try:
        yield
    finally:
        _RUN.active = False


def page_title(name: str) -> str:
    """A page's title from its name ("logit_lens" -> "Logit lens")."""
    return _TITLES.get(name, name.replace("_", " ").capitalize())


def require_shell() -> None:
    """Call first in every page: runs the app (sidebar, navigation, then this page) when the page ran alone."""
    if getattr(_RUN, "active", False):
        return
    PagesManager.uses_pages_directory = False  # what st.navigation itself sets on its first call
    ctx = get_script_run_ctx()
    entry = ctx.pages_manager.main_script_path if ctx is not None else None
    if entry is None or Path(entry).name != "streamlit_app.py":
        return  # the page itself is the main script (a test of one page): no shell to run
    runpy.run_path(str(entry), run_name="__main__")
    st.stop()
