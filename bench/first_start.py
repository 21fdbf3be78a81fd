"""First contact, timed: `streamlit run` on an empty LAYERSCOPE_HOME until the Logit lens shows its results.

  python bench/first_start.py [--repeats 1]

Starts the app exactly as the README says (the server converts the default model's GGUF itself), opens
the default page in headless Debian Chromium and waits for the lens heatmap and table. Prints the
seconds from the server's start to its health check, to the first progress bar, and to the results,
and what a visitor read on the progress bar meanwhile. Target: results within 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.browser import shows_results, state  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, launch  # noqa: E402

PROGRESS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stProgress"]')).map((e) => e.innerText)"""


def once(browser) -> dict:
    with tempfile.TemporaryDirectory() as home:
        started = time.monotonic()
        with launch({"LAYERSCOPE_HOME": home}, log_name="bench-first-start.log") as server:
            healthy = time.monotonic() - started
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(server.url)
            seen, first_bar = [], None
            while True:
                s = state(page)
                if s["errors"]:
                    raise SystemExit(f"the page shows an error: {s['errors']}")
                texts = page.evaluate(PROGRESS_JS)
                if texts and first_bar is None:
                    first_bar = time.monotonic() - started
                seen += [t for t in texts if t not in seen]
                if shows_results(s) and not s["running"]:
                    break
                if time.monotonic() - started > 600:
                    raise SystemExit("no results after 600 s")
                page.wait_for_timeout(200)
            return {"healthy_s": healthy, "first_progress_s": first_bar, "results_s": time.monotonic() - started,
                    "messages": seen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for i in range(args.repeats):
            r = once(browser)
            print(f"run {i + 1}: healthy {r['healthy_s']:.1f} s, first progress bar {r['first_progress_s'] or 0:.1f} s, "
                  f"Logit lens results {r['results_s']:.1f} s after `streamlit run` (target <= 60 s)")
            for message in r["messages"][:3] + r["messages"][-2:]:
                print(f"   a visitor reads: {message}")
        browser.close()


if __name__ == "__main__":
    main()
