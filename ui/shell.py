"""The app shell every page runs inside: navigation and the shared sidebar come from streamlit_app.py.

A deep link as a fresh server's first request (a bookmark of /translation after a restart) makes
Streamlit run the page file by itself: with a ``pages/`` folder beside the entry script it starts in
its old folder-based mode, and switches to ``st.navigation`` only once the entry script has run. The
page would then show raw file names and no model picker. ``require_shell()`` notices that mode and
reruns the app through the entry script, which opens the same page (both modes name a page by its
file name, so the URL resolves to the same page).
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def require_shell() -> None:
    """Call first in every page: reruns through streamlit_app.py when the page was run on its own."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation itself sets on its first call
        st.rerun()
