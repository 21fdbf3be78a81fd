"""First contact, as on a fresh machine: the server itself converts the default model's GGUF.

One `streamlit run` on an EMPTY LAYERSCOPE_HOME. A teammate's bookmark (a deep link to a page) is the
first request and is closed while the conversion runs; a second session waits for the Logit lens
heatmap; then fresh sessions open every page with no error and run the Sequence continuation
default. The conversion happens once and survives the visitor who started it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.app_pages import discover
from tests.e2e.browser import click_primary, open_page, screenshot, shows_results, state, summary, wait_until
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, PAGE_TIMEOUT_S, launch

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)", allow_module_level=True)
pytest.importorskip("playwright", reason="the browser suite needs playwright (pip install -r requirements-dev.txt)")

PAGES = discover()
PROGRESS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stProgress"]')).map((e) => e.innerText)"""
SIDEBAR_JS = """() => ({
  nav: Array.from(document.querySelectorAll('[data-testid="stSidebarNav"] a')).map((a) => a.innerText.trim()),
  pickers: Array.from(document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stSelectbox"]'))
             .map((e) => e.innerText.split('\\n')[0]),
})"""


def progress_texts(page) -> list[str]:
    return page.evaluate(PROGRESS_JS)


def wait_for_progress(page, pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = state(page)
        assert not s["errors"] and not s["traceback"], s["errors"]
        for text in progress_texts(page):
            if re.search(pattern, text):
                return text
        page.wait_for_timeout(200)
    raise AssertionError(f"no progress bar matching {pattern!r} after {timeout_s:.0f} s: {summary(state(page))}")


def assert_app_shell(page) -> None:
    """The sidebar a page gets from streamlit_app.py: the page titles and the model picker."""
    sidebar = page.evaluate(SIDEBAR_JS)
    titles = [p.title for p in PAGES]
    assert [t.split("\n")[-1].strip() for t in sidebar["nav"]] == titles, f"sidebar navigation: {sidebar['nav']}"
    assert "Model" in sidebar["pickers"], f"no model picker in the sidebar: {sidebar}"


def test_a_fresh_server_converts_once_and_serves_every_session(new_page, tmp_path):
    home = tmp_path / "layerscope-home"
    home.mkdir()
    with launch({"LAYERSCOPE_HOME": str(home)}, log_name="e2e-first-contact.log") as server:
        # 1. A deep link is the very first request; it sees the app shell and the conversion's progress.
        translation = next(p for p in PAGES if p.script == "pages/translation.py")
        bookmark = new_page()
        bookmark.goto(f"{server.url}/{translation.url_path}")
        text = wait_for_progress(bookmark, r"Loading gemma-3-270m", PAGE_TIMEOUT_S)
        assert_app_shell(bookmark)
        assert not list((home / "converted").glob("*/layerscope-conversion.json")), "converted before anyone asked?"
        print(f"\nthe first visitor sees: {text!r}")
        bookmark.context.close()  # the teammate closes the tab mid-conversion

        # 2. A second session arrives while the conversion goes on, and gets the lens.
        second = new_page()
        second.goto(server.url)
        seen = wait_for_progress(second, r"Loading gemma-3-270m \(asked for by another session first\)", 60)
        print(f"a second visitor sees: {seen!r}")
        wait_until(second, shows_results, PAGE_TIMEOUT_S, what="the second session's Logit lens")
        first_results_s = time.monotonic() - server.started
        print(f"first Logit lens results {first_results_s:.1f} s after `streamlit run` (empty LAYERSCOPE_HOME)")
        (ARTIFACTS / "e2e-first-contact.txt").write_text(f"first_lens_results_s={first_results_s:.1f}\n")
        screenshot(second, "first-contact-logit-lens")
        folders = [p for p in (home / "converted").iterdir()]
        assert len(folders) == 1 and (folders[0] / "layerscope-conversion.json").is_file(), folders

        # 3. Fresh sessions open every page: no error, the app shell on each.
        for app_page in PAGES:
            page = new_page()
            s = open_page(page, server.url, app_page)
            assert not s["errors"] and not s["traceback"], (app_page.script, s["errors"])
            assert_app_shell(page)
            page.context.close()

        # 4. The Sequence continuation default names the head exact ablation finds.
        sequences = next(p for p in PAGES if p.script == "pages/sequences.py")
        page = new_page()
        open_page(page, server.url, sequences)
        click_primary(page)
        wait_until(page, shows_results, PAGE_TIMEOUT_S, what="the Sequence continuation default")
        screenshot(page, "first-contact-sequences")
        metrics = page.eval_on_selector_all('[data-testid="stMetric"]', "ms => ms.map(m => m.innerText)")
        headline = next(m for m in metrics if m.startswith("Most important head"))
        assert "L12H0" in headline, metrics
        log = server.log_tail(200_000)
    assert "CacheReplayClosureError" not in log and "Traceback" not in log, log[-3000:]
    assert len(list((home / "converted").iterdir())) == 1  # one conversion, no half-written leftovers
