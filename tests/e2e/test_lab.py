"""A lab for a team, in Chromium: a link reopens what a teammate saw after the server was killed and restarted
(same numbers, no forward pass, shown while the model loads); four sessions queue on one model and a Cancel
starts the next at once; History reopens a run through its link; tampered URLs get a message, never a traceback.
Figures go to artifacts/e2e-lab.txt (the README quotes them)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.e2e.app_pages import discover
from tests.e2e.browser import (
    click_primary, download, open_page, screenshot, shows_results, state, summary, wait_until,
)
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, PAGE_TIMEOUT_S, _free_port, launch

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)", allow_module_level=True)
pytest.importorskip("playwright", reason="the browser suite needs playwright (pip install -r requirements-dev.txt)")

PAGES = {p.name: p for p in discover()}
FIGURES = ARTIFACTS / "e2e-lab.txt"
PROMPT = "The Great Wall is in the country of"  # " Wall" is one token: a label of the grid
MAIN_INFO_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stAlertContentInfo"]'))
  .map((e) => e.innerText)"""
MAIN_PROGRESS_JS = """() => document.querySelectorAll('[data-testid="stMain"] [data-testid="stProgress"]').length"""


def figure(name: str, value) -> None:
    lines = [line for line in (FIGURES.read_text().splitlines() if FIGURES.exists() else []) if not line.startswith(f"{name}=")]
    FIGURES.write_text("\n".join(lines + [f"{name}={value}"]) + "\n")


def captions(page) -> str:
    return " | ".join(page.eval_on_selector_all('[data-testid="stMain"] [data-testid="stCaptionContainer"]',
                                                "cs => cs.map(c => c.innerText)"))


def test_a_link_after_a_killed_server_shows_the_same_numbers_with_no_forward_pass(new_page, tmp_path):
    from tests.apptest import fresh_home

    home, port = fresh_home(tmp_path), _free_port()
    forwards = tmp_path / "forwards-after-restart.log"
    with launch({"LAYERSCOPE_HOME": home, "LAYERSCOPE_E2E_FORWARDS": tmp_path / "forwards.log"},
                log_name="e2e-lab-first.log", port=port) as server:
        page = new_page()
        open_page(page, server.url, PAGES["logit_lens"])
        wait_until(page, shows_results, PAGE_TIMEOUT_S, what="the Logit lens default")
        page.locator('[data-testid="stSidebar"] textarea').first.fill(PROMPT)
        click_primary(page)
        wait_until(page, lambda s: shows_results(s) and any("Wall" in l for c in s["charts"] for l in c["labels"]),
                   120, what="the teammate's run")
        link, before = page.url, download(page, "CSV")
        assert "Wall" in link and "run=logit_lens" in link.replace("%2C", ",")
        server.process.kill()  # SIGKILL: no shutdown of any kind
        server.process.wait(timeout=30)
    # The same server comes back on the same port; its model now takes 60 s to load.
    with launch({"LAYERSCOPE_HOME": home, "LAYERSCOPE_E2E_LOAD_DELAY": 60, "LAYERSCOPE_E2E_FORWARDS": forwards},
                log_name="e2e-lab-restarted.log", port=port) as server:
        page = new_page()  # another browser: another person
        started = time.monotonic()
        page.goto(link)
        timeline, painted, charted = [], None, None
        while charted is None and time.monotonic() - started < 60:
            s = state(page)
            now = time.monotonic() - started
            if painted is None and s["title"]:
                painted = now
            if any(c["shown"] and c["marks"] > 0 for c in s["charts"]) and s["tables"]:
                charted = now
            if not timeline or timeline[-1][1] != summary(s):
                timeline.append((round(now, 2), summary(s)))
            page.wait_for_timeout(50)
        print("\n".join(f"{t:6.2f} s  {what}" for t, what in timeline))
        assert charted is not None, timeline[-1]
        screenshot(page, "lab-link-after-restart")
        after = download(page, "CSV")
        text = captions(page)
        still_loading = bool(page.locator('[data-testid="stSidebar"]', has_text="Loading gemma-3-270m").count())
    seconds, load = charted - painted, os.getloadavg()[0]
    print(f"\nlink -> chart {seconds:.2f} s after the page's first paint ({charted:.2f} s after goto); "
          f"model still loading: {still_loading}; load average {load:.1f} on {os.cpu_count()} cores")
    figure("link_chart_after_first_paint_s", f"{seconds:.2f}")
    figure("link_chart_after_goto_s", f"{charted:.2f}")
    figure("link_load_average", f"{load:.1f}")
    assert before == after  # the same numbers, byte for byte
    assert not forwards.exists() or not forwards.read_text().strip(), "the restarted server ran a forward pass"
    assert "From this server's store" in text and "still loading" in text and still_loading, text
    assert any("Wall" in label for c in s["charts"] for label in c["labels"])
    # 2 s on a machine that is not oversubscribed; other jobs sharing the cores stretch every step alike.
    assert seconds <= 2.0 * max(1.0, load / (os.cpu_count() or 1)), seconds


def test_four_sessions_queue_and_a_cancel_starts_the_next_at_once(app_server, new_page):
    pages = [new_page() for _ in range(4)]
    seed = int(time.time()) % 100_000 + 1  # settings no earlier test ran: a stored result would skip the queue
    for i, page in enumerate(pages):
        page.goto(f"{app_server.url}/{PAGES['sequences'].url_path}?seed={seed + i}", wait_until="commit")
        wait_until(page, lambda s: s["title"] is not None, PAGE_TIMEOUT_S, what="opening Sequence continuation")
    for page in pages:  # four teammates press Run at about the same time
        page.locator('[data-testid="stSidebar"] button', has_text="Run").first.click()

    def places(page) -> str:
        return " ".join(page.evaluate(MAIN_INFO_JS))

    def ahead(page) -> int | None:
        """How many runs are ahead of this session's (None: it is not waiting)."""
        found = re.search(r"(\d+) runs? ahead of yours", places(page))
        return int(found.group(1)) if found else None

    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        waiting = {ahead(p): p for p in pages if ahead(p) is not None}
        running = [p for p in pages if ahead(p) is None and p.evaluate(MAIN_PROGRESS_JS)]
        if set(waiting) == {1, 2, 3} and len(running) == 1:
            break
        pages[0].wait_for_timeout(200)
    assert set(waiting) == {1, 2, 3} and len(running) == 1, [places(p) for p in pages]  # places 1-3, in click order or not
    for k, page in waiting.items():
        runs = "1 run" if k == 1 else f"{k} runs"
        assert f"{runs} ahead of yours on gemma-3-270m: Sequence continuation, running for" in places(page)
    screenshot(waiting[2], "lab-queue-waiting")

    # Cancel the running one: the next starts (its progress bar replaces its place in line).
    cancel = running[0].locator('[data-testid="stMain"] button', has_text="Cancel").first
    clicked = time.monotonic()
    cancel.click()
    while ahead(waiting[1]) is not None or not waiting[1].evaluate(MAIN_PROGRESS_JS):
        assert time.monotonic() - clicked < 30, places(waiting[1])
        waiting[1].wait_for_timeout(20)
    seconds, load = time.monotonic() - clicked, os.getloadavg()[0]
    print(f"\nthe next run started {seconds:.2f} s after Cancel was clicked (load average {load:.1f} on "
          f"{os.cpu_count()} cores)")
    figure("cancel_to_next_start_s", f"{seconds:.2f}")
    figure("cancel_load_average", f"{load:.1f}")
    wait_until(running[0], lambda s: not s["running"], 30, quiet_s=0.5, what="the cancelled session")
    assert "Cancelled" in places(running[0]) and not state(running[0])["charts"]

    # A waiting teammate closes the tab: the one behind moves up.
    assert ahead(waiting[2]) == 1 and ahead(waiting[3]) == 2
    waiting[2].context.close()
    while ahead(waiting[3]) == 2:
        assert time.monotonic() - clicked < 60, places(waiting[3])
        waiting[3].wait_for_timeout(100)
    assert ahead(waiting[3]) == 1
    for page in (waiting[1], waiting[3]):  # done: cancel the rest
        page.locator('[data-testid="stMain"] button', has_text="Cancel").first.click()
    wait_until(waiting[3], lambda s: not s["running"] and "Cancelled" in places(waiting[3]), 60, quiet_s=0.5,
               what="the last session")
    # The running analysis stops at its next progress report (here one batched ablation pass): 1 s on a machine
    # that is not oversubscribed (tests/ui/test_queue.py measures the queue itself: tens of milliseconds).
    assert seconds < 1.0 * max(1.0, load / (os.cpu_count() or 1)), seconds
    assert "Traceback" not in app_server.log_tail(200_000)


def test_history_reopens_a_run_through_its_link(app_server, new_page):
    page = new_page()
    open_page(page, app_server.url, PAGES["logit_lens"])
    wait_until(page, shows_results, PAGE_TIMEOUT_S, what="a lens run to list")
    history = new_page()
    open_page(history, app_server.url, PAGES["history"])
    wait_until(history, lambda s: bool(s["tables"]) and s["tables"][0]["rows"] >= 1, 60, what="History")
    screenshot(history, "history")
    href = history.locator('[data-testid="stMain"] a', has_text="Open").first.get_attribute("href")
    assert href and href.startswith(app_server.url) and "run=" in href, href
    reopened = new_page()
    reopened.goto(href)
    wait_until(reopened, shows_results, 60, what="the run opened from History")
    assert "From this server's store" in captions(reopened)


def test_tampered_urls_get_a_message_never_a_traceback(app_server, new_page):
    page = new_page()
    page.goto(f"{app_server.url}/no_such_page?prompt=x")
    page.wait_for_selector('[role="dialog"]', timeout=60_000)
    assert "Page not found" in " ".join(state(page)["dialogs"])
    assert not state(page)["traceback"]
    page = new_page()
    page.goto(f"{app_server.url}/?model=gemma-3-270m&top_k=500&run=logit_lens")
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        s = state(page)
        if s["errors"] and shows_results(s) and not s["running"]:
            break
        page.wait_for_timeout(250)
    assert len(s["errors"]) == 1 and "must be between 1 and 20, got 500" in s["errors"][0], summary(s)
    assert not s["traceback"]
    assert re.search(r"top_k=", page.url) is None  # the URL no longer carries the refused value
    screenshot(page, "lab-tampered-link")
