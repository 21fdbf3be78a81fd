"""Runs take turns on one model: four sessions pressing Run at once, the three waiting see places 1-3 and what is
ahead of them; cancelling the running one starts the next at once and keeps nothing of it.

Four AppTest sessions in threads (Streamlit runs each browser session's script in its own thread the same way);
the lens is slowed down to many small progress steps so that the line can be watched. Cancelling here goes
through the queue (``ticket.cancel()``, what the page's Cancel button amounts to: its rerun stops the script at
the same progress step); tests/e2e presses the button itself."""

from __future__ import annotations

import threading
import time

import core.analyses.lens.analysis as lens_analysis
from core.queue import run_queue
from tests.test_concurrency import in_threads
from tests.ui.conftest import ok, open_app

CITIES = ["Berlin", "Tokyo", "Madrid", "Cairo"]


def test_four_sessions_wait_their_turn_and_a_cancel_starts_the_next_at_once(tiny_folder, monkeypatch):
    spec = str(tiny_folder)
    sessions = [ok(open_app({"model": spec}, timeout=120)) for _ in CITIES]  # each sees the default view first
    real = lens_analysis.run_lens

    def slow(*args, progress=None, **kwargs):
        for step in range(400):  # about 10 s in steps of 25 ms, each one a progress report
            progress(step / 400, f"step {step}")
            time.sleep(0.025)
        return real(*args, progress=progress, **kwargs)

    monkeypatch.setattr(lens_analysis, "run_lens", slow)
    seen, started = {}, {}

    def watch():
        """Record the line as the sessions see it; cancel the running run once all four are in line."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(run_queue().line(spec)) < 4:
            time.sleep(0.01)
        line = run_queue()._lines[spec]
        time.sleep(0.3)  # the running one has reported some progress
        seen["places"] = [t.position() for t in line]
        seen["messages"] = [t.message() for t in line]
        first, second = line[0], line[1]
        cancelled_at = time.monotonic()
        first.cancel()
        while second.state != "running" and time.monotonic() < deadline:
            time.sleep(0.001)
        started["seconds"] = time.monotonic() - cancelled_at
        for ticket in list(line):  # the rest are cancelled too: waiting ones leave the line at once
            ticket.cancel()

    watcher = threading.Thread(target=watch)
    watcher.start()

    def press(at, city):
        at.text_area[0].input(f"The weather in {city} today is")
        return at.button[0].click().run(timeout=120)

    in_threads([lambda at=at, city=city: press(at, city) for at, city in zip(sessions, CITIES)])
    watcher.join()
    assert seen["places"] == [0, 1, 2, 3]
    assert seen["messages"][0] == ""
    assert seen["messages"][1].startswith(f"1 run ahead of yours on {spec}: Logit lens, running for ")
    assert seen["messages"][3].startswith(f"3 runs ahead of yours on {spec}: Logit lens, running for ")
    assert seen["messages"][3].endswith("; Logit lens, waiting; Logit lens, waiting")
    print(f"\nthe next run started {started['seconds'] * 1000:.0f} ms after the running one was cancelled")
    assert started["seconds"] < 1.0
    for at in sessions:  # every session says so, shows nothing stale, and the line is empty
        assert not at.exception and any("Cancelled" in i.value for i in at.info), ([i.value for i in at.info], [c.value for c in at.caption], [e.value for e in at.error], at.query_params)
        assert not at.dataframe
    assert run_queue().line(spec) == []
