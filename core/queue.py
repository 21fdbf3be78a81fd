"""Runs take turns on a model: one first-come, first-served line per model for a whole server, with cancel.

A team shares one server and its models; two analyses on one model at once would each run at half speed
(or not fit in memory), so each run takes a ticket and waits its turn::

    ticket = run_queue().ticket(model_key, "Sequence continuation", session_id, on_wait=show, alive=connected)
    with ticket:                                   # waits; show(ticket) is called while it does
        result = run(handle, settings, ticket.progress(bar))

``ticket.position()`` is 0 once it runs; ``ticket.message()`` says who is ahead ("2 runs ahead of yours on
gemma-3-270m: Sequence continuation, running for 40 s; Logit lens, waiting"). ``ticket.cancel()`` takes a
waiting ticket out of the line; on the running one it makes the next call of ``ticket.progress(...)`` raise
``Cancelled``, so the run stops at its next progress report and the next ticket starts at once.

A waiting ticket whose session is gone is dropped: while it waits, its thread renews its session's heartbeat
whenever ``alive()`` says the session is still there (always, without ``alive``); ``heartbeat(session)`` renews
it from elsewhere. A ticket whose heartbeat is older than ``heartbeat_s`` leaves the line (its waiter gets
``Cancelled``). A running ticket is never dropped: its result is still worth keeping.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable

from core.errors import UserError
from core.progress import Progress


class Cancelled(UserError):
    """The run was cancelled (or its session left the line) before it finished: there is no result to keep."""


@dataclass(frozen=True)
class Place:
    """A ticket in a line, as others see it: ``seconds`` running for (``running``) or waiting for."""

    label: str
    session: str
    running: bool
    seconds: float
    fraction: float | None  # the running one's last progress report


class Ticket:
    """One run's place in its model's line (see the module docstring)."""

    def __init__(self, queue: "RunQueue", model_key: Hashable, label: str, session: str,
                 on_wait: Callable[["Ticket"], None] | None, alive: Callable[[], bool] | None):
        self.queue, self.model_key, self.label, self.session = queue, model_key, label, session
        self.on_wait, self.alive = on_wait, alive
        self.number = next(queue._numbers)
        self.queued_at = time.monotonic()
        self.started_at: float | None = None
        self.state = "queued"  # queued | running | done | cancelled | dropped
        self.cancel_requested = False
        self.fraction: float | None = None
        self.last_message = ""

    def position(self) -> int | None:
        """0 when running (or next to start), n when n runs are ahead; None once it has left the line."""
        with self.queue._lock:
            self.queue._expire()
            line = self.queue._lines.get(self.model_key, [])
            return line.index(self) if self in line else None

    def ahead(self) -> list[Place]:
        """The runs ahead of this one, the running one first."""
        with self.queue._lock:
            self.queue._expire()
            line = self.queue._lines.get(self.model_key, [])
            return [t._place() for t in line[: line.index(self)]] if self in line else []

    def message(self) -> str:
        """"2 runs ahead of yours on M: A, running for 40 s; B, waiting" ("" when none is ahead)."""
        ahead = self.ahead()
        if not ahead:
            return ""
        parts = [f"{p.label}, running for {p.seconds:.0f} s" + (f" ({p.fraction:.0%})" if p.fraction is not None else "")
                 if p.running else f"{p.label}, waiting" for p in ahead]
        runs = "1 run" if len(ahead) == 1 else f"{len(ahead)} runs"
        return f"{runs} ahead of yours on {self.model_key}: {'; '.join(parts)}"

    def cancel(self) -> None:
        """Leave the line (waiting), or stop at the next progress report (running)."""
        with self.queue._lock:
            self.cancel_requested = True
            if self.state == "queued":
                self.queue._leave(self, "cancelled")

    def check(self) -> None:
        """Raise ``Cancelled`` if this run was cancelled: for loops that report no progress."""
        if self.cancel_requested:
            raise Cancelled(f"{self.label} was cancelled")

    def progress(self, inner: Progress | None = None) -> Progress:
        """``inner`` (or nothing), raising ``Cancelled`` once the run is cancelled; others see the fraction."""
        def report(fraction: float, message: str) -> None:
            self.check()
            self.fraction, self.last_message = float(fraction), message
            if inner is not None:
                inner(fraction, message)

        return report

    def wait_turn(self, timeout: float | None = None) -> None:
        """Block until this ticket runs (``Cancelled`` if it is cancelled or dropped first; ``TimeoutError``)."""
        queue, deadline = self.queue, None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                with queue._lock:
                    queue._expire()
                    if self.state in ("cancelled", "dropped"):
                        raise Cancelled(f"{self.label} was {'cancelled' if self.state == 'cancelled' else 'dropped: its session left'} "
                                        "before it started")
                    line = queue._lines.get(self.model_key, [])
                    if line and line[0] is self:
                        self.state, self.started_at = "running", time.monotonic()
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(self.message())
                    queue._lock.wait(queue.poll_s)
                if self.alive is None or self.alive():
                    queue.heartbeat(self.session)
                if self.on_wait is not None:
                    self.on_wait(self)
        except BaseException:  # cancelled, timed out, or the caller's thread stopped (a Streamlit rerun)
            with queue._lock:
                if self.state in ("queued", "running"):
                    queue._leave(self, "cancelled")
            raise

    def __enter__(self) -> "Ticket":
        self.wait_turn()
        return self

    def __exit__(self, *exc) -> None:
        with self.queue._lock:
            self.queue._leave(self, "cancelled" if self.cancel_requested else "done")

    def _place(self) -> Place:
        now = time.monotonic()
        running = self.state == "running"
        return Place(self.label, self.session, running, now - (self.started_at if running else self.queued_at),
                     self.fraction if running else None)

    def __repr__(self) -> str:
        return f"Ticket({self.number}, {self.label!r}, {self.state})"


class RunQueue:
    """The lines of a server, one per model key."""

    def __init__(self, heartbeat_s: float = 30.0, poll_s: float = 0.25):
        self.heartbeat_s, self.poll_s = heartbeat_s, poll_s
        self._lock = threading.Condition()
        self._lines: dict[Hashable, list[Ticket]] = {}
        self._beats: dict[str, float] = {}
        self._numbers = itertools.count()

    def ticket(self, model_key: Hashable, label: str, session: str, on_wait: Callable[[Ticket], None] | None = None,
               alive: Callable[[], bool] | None = None) -> Ticket:
        """A place at the end of ``model_key``'s line, taken now (enter it with ``with`` to wait and run)."""
        ticket = Ticket(self, model_key, label, session, on_wait, alive)
        with self._lock:
            self._beats[session] = time.monotonic()
            self._lines.setdefault(model_key, []).append(ticket)
        return ticket

    def heartbeat(self, session: str) -> None:
        """The session is still there: its waiting tickets keep their places."""
        with self._lock:
            self._beats[session] = time.monotonic()

    def line(self, model_key: Hashable) -> list[Place]:
        """Everyone in one model's line, the running one first."""
        with self._lock:
            self._expire()
            return [t._place() for t in self._lines.get(model_key, [])]

    def cancel_session(self, session: str) -> int:
        """Cancel every ticket of a session (it closed): how many there were."""
        with self._lock:
            tickets = [t for line in self._lines.values() for t in line if t.session == session]
        for ticket in tickets:
            ticket.cancel()
        return len(tickets)

    def _expire(self) -> None:
        """Drop waiting tickets whose session's heartbeat is too old (call with the lock held)."""
        now = time.monotonic()
        waiting = {t.session for line in self._lines.values() for t in line}
        for session in [s for s, beat in self._beats.items() if s not in waiting and now - beat > self.heartbeat_s]:
            del self._beats[session]  # sessions long gone
        for line in list(self._lines.values()):
            for ticket in [t for t in line if t.state == "queued"]:
                if now - self._beats.get(ticket.session, ticket.queued_at) > self.heartbeat_s:
                    self._leave(ticket, "dropped")

    def _leave(self, ticket: Ticket, state: str) -> None:
        """Take a ticket out of its line and wake the others (call with the lock held)."""
        ticket.state = state
        line = self._lines.get(ticket.model_key, [])
        if ticket in line:
            line.remove(ticket)
            if not line:
                del self._lines[ticket.model_key]
            self._lock.notify_all()


_default: RunQueue | None = None
_default_lock = threading.Lock()


def run_queue() -> RunQueue:
    """The server's queue (one per process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RunQueue()
        return _default
