"""The decode-step lock is granted in arrival order; the engine gate lets generations share an engine and makes
an unload wait for all of them (and keeps new ones out while it waits)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from studio.inference.locks import EngineGate, FairLock


def _wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_fair_lock_grants_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        _wait_until(lambda n=i + 1: len(lock._line) == n)  # each waiter is in line before the next comes
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_fair_lock_two_threads_take_turns() -> None:
    """Two loops that release and immediately ask again alternate (a plain Lock lets one of them run on)."""
    lock = FairLock()
    trace: list[str] = []
    start = threading.Barrier(2)

    def loop(name: str) -> None:
        start.wait()
        for _ in range(30):
            with lock:
                trace.append(name)
                time.sleep(0.001)

    threads = [threading.Thread(target=loop, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    middle = trace[5:-5]  # the start and the end may be one-sided
    runs = sum(1 for x, y in itertools.pairwise(middle) if x == y)
    assert runs <= 2, "".join(trace)


def test_fair_lock_release_unheld_raises() -> None:
    with pytest.raises(RuntimeError):
        FairLock().release()


def test_gate_shared_holders_overlap_and_exclusive_waits_for_them() -> None:
    gate = EngineGate()
    inside = threading.Event()
    leave = threading.Event()
    events: list[str] = []

    def reader() -> None:
        with gate.shared():
            inside.set()
            leave.wait(5)
            events.append("reader out")

    r = threading.Thread(target=reader)
    r.start()
    assert inside.wait(5)
    with gate.shared():  # a second shared holder enters while the first is inside
        events.append("second reader")

    def writer() -> None:
        with gate.exclusive():
            events.append("writer")

    w = threading.Thread(target=writer)
    w.start()
    _wait_until(lambda: gate._waiting_exclusive == 1)
    assert "writer" not in events

    # a new shared holder must wait behind the waiting writer (an unload is not starved)
    def late_reader() -> None:
        with gate.shared():
            events.append("late reader")

    late = threading.Thread(target=late_reader)
    late.start()
    time.sleep(0.05)
    assert "late reader" not in events
    leave.set()
    for t in (r, w, late):
        t.join(5)
    assert events == ["second reader", "reader out", "writer", "late reader"]


def test_gate_hold_picks_shared_or_exclusive() -> None:
    gate = EngineGate()
    with gate.hold(True), gate.hold(True):  # shared holders nest
        assert gate._shared == 2
    with gate.hold(False):
        assert gate._exclusive
    assert not gate._exclusive and gate._shared == 0
