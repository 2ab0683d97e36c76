"""Admission control: how many generations one model runs and keeps waiting, and the 429 beyond that.

Every generation, from any surface (REST, WebSocket, Gradio, the CLI, jobs), asks :class:`Admission` for a
place on its model before its worker thread starts:

    admit(key) ──► waiting (FIFO per model) ──wait_turn()──► running ──release()──► (gone)
        │                   │
        │                   └─ cancelled while waiting: gives its place up, never runs
        └─ ``max_running + max_queued`` places taken, or draining: refused at once (RateLimitError 429 /
           ShuttingDownError 503), before anything streams

A place is taken synchronously in the caller's thread, so a refused request gets its 429 as an HTTP status
instead of an error in the middle of a stream. ``Retry-After`` comes from what the model really did: a waiting
place frees when one running generation ends, so the hint is the mean duration of the model's recent
generations divided by the running cap (at least 1 s; 1 s with no history yet).

The engines keep their own limits inside this one (the transformers engine's ``n_parallel`` slots, the
llama.cpp engine's exclusive gate): admission is the outer guard that bounds the queue and answers 429. An alias
whose ``context_params.n_parallel`` is larger than ``STUDIO_MAX_RUNNING_PER_MODEL`` raises its model's running cap
to it (``admit(key, running_cap=...)``): 32 streams on an alias made for 32 run 32 wide, not 8 at a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from studio.errors import RateLimitError, ShuttingDownError

RECENT = 32  # generations per model the Retry-After estimate averages over


@dataclass(eq=False)
class Ticket:
    """One generation's place on one model (``key``: the loaded-model key it counts against)."""

    key: str
    running_since: float | None = None


@dataclass
class _ModelLine:
    cap: int  # generations that may run at once (the setting, or an alias's larger n_parallel)
    running: int = 0
    waiting: deque[Ticket] = field(default_factory=deque)
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))


class Admission:
    """Per-model caps on running and waiting generations (``STUDIO_MAX_RUNNING_PER_MODEL`` and
    ``STUDIO_MAX_QUEUED_PER_MODEL``); thread-safe."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._cond = threading.Condition(threading.Lock())
        self._lines: dict[str, _ModelLine] = {}
        self._draining = False

    def admit(self, key: str, running_cap: int | None = None) -> Ticket:
        """Take a place on ``key`` or raise: RateLimitError (429, with ``retry_after``) when every running and
        waiting place is taken, ShuttingDownError (503) while draining. ``running_cap`` (an alias's n_parallel)
        raises the model's running cap above the setting, never lowers it."""
        with self._cond:
            if self._draining:
                raise ShuttingDownError("the studio is shutting down and takes no new generations; try again later")
            line = self._lines.setdefault(key, _ModelLine(cap=self.max_running))
            line.cap = max(self.max_running, running_cap or 0)
            if line.running + len(line.waiting) >= line.cap + self.max_queued:
                retry = self._retry_after(line)
                running = f"STUDIO_MAX_RUNNING_PER_MODEL={self.max_running}"
                if line.cap != self.max_running:
                    running = f"n_parallel={line.cap} of the alias"
                raise RateLimitError(
                    f"model '{key}' is busy: {line.running} generations running and {len(line.waiting)} waiting, "
                    f"the most allowed ({running}, "
                    f"STUDIO_MAX_QUEUED_PER_MODEL={self.max_queued}); try again in {math.ceil(retry)} s",
                    retry_after=retry,
                )
            ticket = Ticket(key)
            line.waiting.append(ticket)
            return ticket

    def wait_turn(self, ticket: Ticket, cancel: threading.Event, poll_s: float = 0.05) -> bool:
        """Block until ``ticket`` is first in its model's line and a running place is free, then count it as
        running. False when ``cancel`` is set first (its place is given up)."""
        with self._cond:
            line = self._lines[ticket.key]
            while not (line.waiting and line.waiting[0] is ticket and line.running < line.cap):
                if cancel.is_set():
                    line.waiting.remove(ticket)
                    self._cond.notify_all()
                    return False
                self._cond.wait(poll_s)  # ``cancel`` is an Event of its own: look at it now and then
            line.waiting.popleft()
            line.running += 1
            ticket.running_since = time.monotonic()
            self._cond.notify_all()  # the next in line may fit too
            return True

    def release(self, ticket: Ticket) -> None:
        """Give a place back: a running one (its duration feeds Retry-After) or one that never got to run."""
        with self._cond:
            line = self._lines[ticket.key]
            if ticket.running_since is not None:
                line.running -= 1
                line.durations.append(time.monotonic() - ticket.running_since)
                ticket.running_since = None
            elif ticket in line.waiting:
                line.waiting.remove(ticket)
            self._cond.notify_all()

    def start_draining(self) -> None:
        """Refuse every new generation from now on (shutdown)."""
        with self._cond:
            self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    def all_counts(self) -> dict[str, tuple[int, int]]:
        """Every model line's (running, waiting) generations (``GET /metrics``)."""
        with self._cond:
            return {key: (line.running, len(line.waiting)) for key, line in self._lines.items()}

    def counts(self, key: str) -> tuple[int, int]:
        """(running, waiting) on ``key``."""
        with self._cond:
            line = self._lines.get(key)
            return (line.running, len(line.waiting)) if line else (0, 0)

    def _retry_after(self, line: _ModelLine) -> float:
        if not line.durations:
            return 1.0
        mean = sum(line.durations) / len(line.durations)
        return max(1.0, mean / line.cap)
