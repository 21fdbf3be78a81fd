"""Every page of streamlit_app.PAGES in a real headless Chromium: its default analysis runs on the
default model and a chart and a table actually render (marks drawn, rows filled), with no
traceback or error on screen. Plus: the navigation lists exactly PAGES, bad prompts get a message
and the app keeps working, and four users at once share one model without mixing results.

Pages added to PAGES later are covered without editing this file (see app_pages.discover).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.app_pages import discover
from tests.e2e.browser import (
    PRIMARY, click_primary, open_page, screenshot, shows_results, sidebar_section, summary, wait_until,
)
from tests.e2e.conftest import CHROMIUM, PAGE_TIMEOUT_S, SCREENSHOTS

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium; .ci/run does it)",
        allow_module_level=True,
    )
pytest.importorskip("playwright", reason="the browser suite needs playwright (pip install -r requirements-dev.txt)")

PAGES = discover()
ANALYSES = [p for p in PAGES if p.name != "history"]  # History lists runs: tests/e2e/test_lab.py opens it


@pytest.mark.parametrize("app_page", ANALYSES, ids=[p.name for p in ANALYSES])
def test_page_default_run_shows_chart_and_table(app_server, new_page, app_page):
    """The page's default analysis, as a user runs it: open, press its Run button (sidebar), see results."""
    page = new_page()
    try:
        first = open_page(page, app_server.url, app_page)
        label = click_primary(page)
        if label is None and not shows_results(first):
            raise AssertionError(f"{app_page.script} has no primary button to run and shows no results by default")
        final = wait_until(page, shows_results, PAGE_TIMEOUT_S, what=f"{app_page.script} after pressing {label!r}")
    finally:
        screenshot(page, app_page.name)
    drawn = [c for c in final["charts"] if c["shown"]]
    assert any(c["marks"] > 0 or c["renderer"] == "canvas" for c in drawn), f"no chart draws any mark: {summary(final)}"
    assert max(t["rows"] for t in final["tables"]) >= 1, f"every table is empty: {summary(final)}"
    assert not final["errors"]


def test_navigation_lists_exactly_the_pages(app_server, new_page):
    page = new_page()
    open_page(page, app_server.url, PAGES[0])
    hrefs = page.eval_on_selector_all('[data-testid="stSidebarNav"] a', "links => links.map(a => a.getAttribute('href'))")
    paths = sorted(re.sub(r"^https?://[^/]+/?", "", h).strip("/") for h in hrefs)
    assert paths == sorted(p.url_path for p in PAGES)


def _lens_page(page, base_url: str) -> None:
    lens = next((p for p in PAGES if p.script == "pages/logit_lens.py"), None)
    if lens is None:
        pytest.skip("the Logit lens page is not in PAGES")
    open_page(page, base_url, lens)
    wait_until(page, shows_results, PAGE_TIMEOUT_S, what="the Logit lens default run")


def _run_prompt(page, prompt: str) -> None:
    page.locator('[data-testid="stSidebar"] textarea').first.fill(prompt)
    page.locator(f'[data-testid="stSidebar"] :is({PRIMARY})').first.click()
    try:
        page.wait_for_selector('[data-testid="stStatusWidget"]', timeout=3000)
    except Exception:  # noqa: BLE001
        pass


def test_bad_prompts_get_a_message_and_the_app_keeps_working(app_server, new_page):
    page = new_page()
    _lens_page(page, app_server.url)
    _run_prompt(page, "   \n\t  ")
    s = wait_until(page, lambda s: bool(s["warnings"]), 60, what="an empty prompt")
    assert "empty" in " ".join(s["warnings"]).lower()
    _run_prompt(page, "Emoji 😀🚀, 中文, हिन्दी, العربية \u200d and a bell \x07 then more")
    s = wait_until(page, lambda s: shows_results(s) and not s["warnings"], 120, what="a mixed-script prompt")
    assert any("中" in label or "文" in label for c in s["charts"] for label in c["labels"]), summary(s)


def test_four_users_at_once_get_their_own_results_from_one_model(app_server, new_page):
    """Four sessions run the lens together: each sees its own prompt's tokens; the server holds one model."""
    cities = ["Berlin", "Tokyo", "Madrid", "Cairo"]
    pages = [new_page() for _ in cities]
    _lens_page(pages[0], app_server.url)
    rss_one = app_server.rss_bytes()
    for page in pages[1:]:
        _lens_page(page, app_server.url)
    for page, city in zip(pages, cities):  # submit all four before waiting for any
        _run_prompt(page, f"The weather in {city} today is")
    for page, city in zip(pages, cities):
        s = wait_until(page, lambda s, city=city: shows_results(s) and any(
            city in label for c in s["charts"] for label in c["labels"]), PAGE_TIMEOUT_S, what=f"the {city} session")
        labels = " ".join(label for c in s["charts"] for label in c["labels"])
        assert not [other for other in cities if other != city and other in labels], f"{city}'s page shows {labels}"
    rss_four = app_server.rss_bytes()
    caption = pages[0].locator('[data-testid="stSidebar"] [data-testid="stCaptionContainer"]').first.inner_text()
    model_mb = float(re.search(r"([\d.]+) MB", caption).group(1))
    growth_mb = (rss_four - rss_one) / 2**20
    print(f"\nserver RSS: {rss_one / 2**20:.0f} MB with one session, {rss_four / 2**20:.0f} MB with four "
          f"(+{growth_mb:.0f} MB); the model itself is {model_mb:.0f} MB")
    (SCREENSHOTS.parent / "e2e-memory.txt").write_text(
        f"server_rss_one_session_mb={rss_one / 2**20:.0f}\nserver_rss_four_sessions_mb={rss_four / 2**20:.0f}\n"
        f"model_mb={model_mb:.0f}\n"
    )
    # A second copy of the model would add its whole size; four sessions' results add a few MB.
    assert growth_mb < model_mb, f"four sessions grew the server by {growth_mb:.0f} MB (model: {model_mb:.0f} MB)"



def test_logit_lens_tracking_sublayers_attribution_and_side_by_side(app_server, new_page):
    """The Logit lens page's deeper views as a user drives them: tracked tokens on sub-layer rows, direct logit
    attribution, and a second prompt side by side."""
    page = new_page()
    _lens_page(page, app_server.url)
    sidebar_section(page, "Track tokens")
    page.get_by_role("textbox", name="Track tokens (comma-separated)").fill('" Paris", London')
    page.get_by_text("after attention and MLP").click()
    page.get_by_role("button", name="Run the lens").click()
    s = wait_until(page, lambda s: sum(c["shown"] for c in s["charts"]) >= 3 and any(
        "18 mlp" in label for c in s["charts"] for label in c["labels"]), PAGE_TIMEOUT_S, what="tracked sub-layer rows")
    sidebar_section(page, "Direct logit attribution")
    page.get_by_role("button", name="Attribute").click()
    s = wait_until(page, lambda s: sum(c["shown"] for c in s["charts"]) >= 5, PAGE_TIMEOUT_S, what="attribution")
    metrics = page.eval_on_selector_all('[data-testid="stMetric"]', "ms => ms.map(m => m.innerText)")
    assert any("components sum to" in m for m in metrics), metrics
    sidebar_section(page, "Side by side")
    page.get_by_role("button", name="Compare").click()
    s = wait_until(page, lambda s: sum(c["shown"] for c in s["charts"]) >= 6, PAGE_TIMEOUT_S, what="side by side")
    screenshot(page, "logit_lens-deeper-views")
    assert not s["errors"]
