"""What a page shows in headless Chromium, read through the DOM: charts and their marks, tables and their
rows, errors, warnings; waiting for a run to finish; clicking the primary button; screenshots."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import PAGE_TIMEOUT_S, SCREENSHOTS

PRIMARY = 'button[data-testid="stBaseButton-primary"], button[data-testid="stBaseButton-primaryFormSubmit"]'

# What the page shows right now: visible charts with their drawn marks, visible tables with their
# row counts, error texts, and whether a script run is in progress.
STATE_JS = """() => {
  // Right after a navigation commits, the new document may have no body yet: everything below reads as empty.
  const main = document.querySelector('[data-testid="stMain"]');
  const within = (s) => main ? Array.from(main.querySelectorAll(s)) : [];
  const shown = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const charts = within('[data-testid="stVegaLiteChart"]').map((c) => {
    const svg = c.querySelector('svg.marks'), canvas = c.querySelector('canvas');
    const surface = svg || canvas;
    return {
      shown: !!surface && shown(surface),
      renderer: svg ? 'svg' : (canvas ? 'canvas' : 'none'),
      marks: svg ? svg.querySelectorAll('.role-mark > *').length : -1,
      labels: svg ? Array.from(svg.querySelectorAll('text')).map((t) => t.textContent) : [],
    };
  });
  const tables = within('[data-testid="stDataFrame"], [data-testid="stTable"]').filter(shown).map((t) => {
    const grid = t.querySelector('[role="grid"]');
    const rows = grid ? Number(grid.getAttribute('aria-rowcount') || 0) - 1 : t.querySelectorAll('tbody tr').length;
    return {rows: rows};
  });
  const errors = Array.from(document.querySelectorAll(
      '[data-testid="stException"], [data-testid="stAlertContentError"]')).map((e) => e.innerText.slice(0, 600));
  const warnings = Array.from(document.querySelectorAll('[data-testid="stAlertContentWarning"]')).map((e) => e.innerText);
  return {
    title: main && main.querySelector('h1') ? main.querySelector('h1').innerText : null,
    charts: charts, tables: tables, errors: errors, warnings: warnings,
    running: !!document.querySelector('[data-testid="stStatusWidget"]'),
    dialogs: Array.from(document.querySelectorAll('[role="dialog"]')).map((e) => e.innerText.slice(0, 300)),
    traceback: !!document.body && document.body.innerText.includes('Traceback (most recent call last)'),
  };
}"""


def state(page) -> dict:
    return page.evaluate(STATE_JS)


def shows_results(s: dict) -> bool:
    return any(c["shown"] for c in s["charts"]) and bool(s["tables"])


def wait_until(page, done, timeout_s: float, quiet_s: float = 1.5, what: str = "") -> dict:
    """Poll the page until ``done(state)`` holds with no script running for ``quiet_s``; fail on errors."""
    deadline = time.monotonic() + timeout_s
    calm_since = None
    while True:
        s = state(page)
        if s["errors"] or s["traceback"]:
            raise AssertionError(f"{what}: the page shows an error: {s['errors'] or 'a traceback'}")
        if any("Page not found" in d for d in s["dialogs"]):  # a wrong URL path: a dialog, not an error element
            raise AssertionError(f"{what}: Streamlit says 'Page not found': {s['dialogs']}")
        if done(s) and not s["running"]:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet_s:
                return s
        else:
            calm_since = None
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not done after {timeout_s:.0f} s; last state: {summary(s)}")
        page.wait_for_timeout(250)


def summary(s: dict) -> str:
    charts = [(c["renderer"], c["marks"]) for c in s["charts"]]
    return (f"title={s['title']!r} running={s['running']} charts(renderer, marks)={charts} "
            f"table rows={[t['rows'] for t in s['tables']]} warnings={s['warnings']}")


def click_primary(page) -> str | None:
    """Click the first enabled primary button: a page's Run button (its form's submit, in the sidebar under the
    model picker), else one in the main area."""
    for area in ("stSidebar", "stMain"):
        buttons = page.locator(f'[data-testid="{area}"] :is({PRIMARY})')
        for i in range(buttons.count()):
            button = buttons.nth(i)
            if button.is_visible() and button.is_enabled():
                label = button.inner_text().strip()
                button.click()
                try:  # let the rerun begin, so the old results are not mistaken for the new ones
                    page.wait_for_selector('[data-testid="stStatusWidget"]', timeout=3000)
                except Exception:  # noqa: BLE001 - a cached rerun can finish before we look
                    pass
                return label
    return None


def sidebar_section(page, title: str) -> None:
    """Open a collapsed expander of the sidebar (a later section's inputs: attribution, circuit search…)."""
    summary = page.locator('[data-testid="stSidebar"] [data-testid="stExpander"] summary', has_text=title).first
    details = summary.locator("xpath=..")
    if details.get_attribute("open") is None:
        summary.click()
        page.wait_for_timeout(300)


def download(page, label: str = "CSV", index: int = 0) -> bytes:
    """The bytes of the ``index``-th download button of the main area labelled ``label``."""
    buttons = page.locator('[data-testid="stMain"] [data-testid="stDownloadButton"] button', has_text=label)
    with page.expect_download() as pending:
        buttons.nth(index).click()
    return Path(pending.value.path()).read_bytes()


def screenshot(page, name: str) -> Path:
    """The whole main area (it scrolls inside the window, so grow the window to its height first)."""
    height = page.evaluate('() => document.querySelector(\'[data-testid="stMain"]\')?.scrollHeight || 1000')
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": int(min(max(1000, height + 40), 12000))})
    page.wait_for_timeout(800)  # charts re-lay out to the new size
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_page(page, base_url: str, app_page) -> dict:
    # The server may be busy (a model loading, other sessions' runs): the title's wait below bounds it.
    page.goto(f"{base_url}/{app_page.url_path}", wait_until="commit", timeout=PAGE_TIMEOUT_S * 1000)
    return wait_until(page, lambda s: s["title"] is not None, PAGE_TIMEOUT_S, what=f"opening {app_page.script}")
