"""Runs take turns on a model (core.queue): first come first served, who is ahead, cancel while waiting or
running (the next run starts at once), and waiting tickets of sessions that have gone are dropped."""

import re
import threading
import time

import pytest

from core.errors import UserError
from core.queue import Cancelled, RunQueue


def fake_analysis(progress, seconds=10.0, every=0.05):
    """An analysis that reports progress every 50 ms for ``seconds``."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        progress(elapsed / seconds, "working")
        time.sleep(every)
    progress(1.0, "done")
    return "result"


def test_four_at_once_take_turns_in_order_and_cancel_starts_the_next_within_a_second():
    queue = RunQueue(poll_s=0.05)
    barrier = threading.Barrier(4)
    enqueued, started, outcome, tickets = [], {}, {}, {}
    lock = threading.Lock()

    def session(n):
        barrier.wait()
        with lock:  # arrival order, as the queue saw it
            ticket = queue.ticket("gemma-3-270m", f"analysis {n}", f"session {n}")
            enqueued.append(n)
            tickets[n] = ticket
            ticket.seen = ticket.position()
        try:
            with ticket:
                started[n] = time.monotonic()
                outcome[n] = fake_analysis(ticket.progress(), seconds=0.2 if n != enqueued[0] else 10.0)
        except Cancelled:
            outcome[n] = "cancelled"

    threads = [threading.Thread(target=session, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while len(started) < 1 or len(enqueued) < 4:
        time.sleep(0.01)
    first, second = enqueued[0], enqueued[1]
    assert sorted(t.seen for t in tickets.values()) == [0, 1, 2, 3]
    assert [tickets[n].seen for n in enqueued] == [0, 1, 2, 3]
    assert [tickets[n].position() for n in enqueued] == [0, 1, 2, 3]
    time.sleep(0.3)
    last = tickets[enqueued[3]]
    ahead = last.ahead()
    assert [p.label for p in ahead] == [f"analysis {n}" for n in enqueued[:3]]
    assert ahead[0].running and ahead[0].seconds >= 0.3 and 0 < ahead[0].fraction < 1 and not ahead[1].running
    assert re.fullmatch(f"3 runs ahead of yours on gemma-3-270m: analysis {first}, running for \\d+ s \\(\\d+%\\); "
                        f"analysis {enqueued[1]}, waiting; analysis {enqueued[2]}, waiting", last.message())
    cancelled_at = time.monotonic()
    tickets[first].cancel()
    for t in threads:
        t.join(10)
    latency = started[second] - cancelled_at
    print(f"cancel of the running ticket -> next start: {latency * 1000:.0f} ms")
    assert latency < 1.0
    assert outcome[first] == "cancelled" and all(outcome[n] == "result" for n in enqueued[1:])
    assert started[enqueued[1]] < started[enqueued[2]] < started[enqueued[3]]  # first in, first served
    assert [tickets[n].state for n in enqueued] == ["cancelled", "done", "done", "done"]
    assert queue.line("gemma-3-270m") == [] and tickets[first].position() is None


def test_cancel_while_waiting_leaves_the_line_and_cancelled_is_a_user_error():
    queue = RunQueue(poll_s=0.05)
    running = queue.ticket("m", "first", "a")
    running.wait_turn()
    waiting = queue.ticket("m", "second", "b")
    third = queue.ticket("m", "third", "c")
    errors = []

    def wait():
        try:
            with waiting:
                pass
        except Cancelled as err:
            errors.append(err)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    waiting.cancel()
    thread.join(2)
    assert errors and isinstance(errors[0], UserError) and "cancelled before it started" in str(errors[0])
    assert waiting.position() is None and third.position() == 1 and waiting.state == "cancelled"
    with pytest.raises(Cancelled):
        waiting.wait_turn()
    other = queue.ticket("another model", "elsewhere", "a")  # lines are per model
    assert other.position() == 0


def test_a_waiting_ticket_of_a_session_that_has_gone_is_dropped():
    queue = RunQueue(heartbeat_s=0.3, poll_s=0.05)
    running = queue.ticket("m", "long run", "alive")
    running.wait_turn()
    connected = {"gone": True, "kept": True}
    outcome = {}

    def wait(session):
        ticket = queue.ticket("m", session, session, alive=lambda: connected[session])
        try:
            with ticket:
                outcome[session] = "ran"
        except Cancelled as err:
            outcome[session] = str(err)

    threads = [threading.Thread(target=wait, args=(s,)) for s in ("gone", "kept")]
    for t in threads:
        t.start()
        time.sleep(0.05)
    time.sleep(0.2)
    assert [p.label for p in queue.line("m")] == ["long run", "gone", "kept"]
    connected["gone"] = False  # its tab closed: no more heartbeats
    time.sleep(0.6)
    assert [p.label for p in queue.line("m")] == ["long run", "kept"]  # the running one is never dropped
    assert outcome == {"gone": "gone was dropped: its session left before it started"}
    never_entered = queue.ticket("m", "never entered", "left at once")  # no thread waits on it: no heartbeat
    time.sleep(0.5)
    assert never_entered.position() is None and never_entered.state == "dropped"
    with running:  # the long run ends: the kept one runs
        pass
    threads[1].join(2)
    assert outcome["kept"] == "ran"


def test_on_wait_is_called_while_waiting_and_an_error_in_it_leaves_the_line():
    queue = RunQueue(poll_s=0.02)
    first = queue.ticket("m", "first", "a")
    first.wait_turn()
    messages = []

    def show(ticket):
        messages.append(ticket.message())
        if len(messages) == 3:
            raise KeyboardInterrupt  # as a Streamlit rerun stops the script thread

    second = queue.ticket("m", "second", "b", on_wait=show)
    with pytest.raises(KeyboardInterrupt):
        second.wait_turn()
    assert messages[0] == "1 run ahead of yours on m: first, running for 0 s" and second.position() is None
    with pytest.raises(TimeoutError, match="1 run ahead"):
        queue.ticket("m", "third", "c").wait_turn(timeout=0.1)
    assert [p.label for p in queue.line("m")] == ["first"]
