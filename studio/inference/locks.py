"""The two locks generation needs: a first-come-first-served lock for decode steps, and a gate that lets many
generations share an engine while unloading it waits for all of them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


class FairLock:
    """A mutex granted in arrival order.

    ``threading.Lock`` wakes waiters in no particular order, and a thread that releases it and asks again a
    moment later (the next decode step) usually wins; two generations sharing a model would then run one after
    the other instead of taking turns. Here each ``acquire`` takes a ticket and waits until it is first in line.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._line: deque[object] = deque()
        self._held = False

    def acquire(self) -> None:
        ticket = object()
        with self._cond:
            self._line.append(ticket)
            while self._held or self._line[0] is not ticket:
                self._cond.wait()
            self._line.popleft()
            self._held = True

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FairLock")
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class EngineGate:
    """A readers–writer lock for one loaded engine.

    Generations on an engine that handles its own concurrency hold it *shared* (any number at once); a generation
    on an engine that does not, and anything that must not overlap a generation (unloading), hold it
    *exclusive*. A waiting exclusive holder stops new shared holders from entering, so an unload is not starved
    by a steady flow of requests.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting_exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_exclusive += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def hold(self, concurrent: bool) -> AbstractContextManager[None]:
        """Shared for an engine that serves several requests at once, else exclusive."""
        return self.shared() if concurrent else self.exclusive()
