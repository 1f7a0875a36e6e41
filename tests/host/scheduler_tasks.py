"""Schedulables for the scheduler tests (``tests/host/test_scheduler_*.py``):
each notes what a worker did with it."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from moonbus.host.scheduler import ScriptScheduler


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class Ticker:
    """Runs every ``period`` seconds and notes the thread each run is on."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.threads: list[int] = []

    def run_slice(self, now: float) -> float | None:
        self.threads.append(threading.get_ident())
        return now + self.period


class Busy:
    """Always due; each slice takes ``seconds`` without the GIL (like Lua code)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: list[int] = []

    def run_slice(self, now: float) -> float | None:
        self.threads.append(threading.get_ident())
        if self.seconds:
            time.sleep(self.seconds)
        return now


class Stuck:
    """One slice that blocks until released (a host call that hangs), at most
    ``hold`` seconds; no next run."""

    def __init__(self, hold: float = 10.0) -> None:
        self.hold = hold
        self.release = threading.Event()
        self.entered = threading.Event()

    def run_slice(self, now: float) -> float | None:
        self.entered.set()
        self.release.wait(self.hold)
        return None


def one_at_a_time(spans: list[tuple[float, float]], stuck_after: float | None = None) -> bool:
    """No slice started before the one that started before it had ended.

    ``stuck_after``: except beside a slice that had run that long (half of
    it, for the time between the scheduler's clock reading and the task's):
    the scheduler's stuck rule (``assist_lag``), which a loaded machine can
    trigger by taking the CPU from a worker in the middle of a short slice."""
    ordered = sorted(spans)
    return all(later[0] >= earlier[1]
               or (stuck_after is not None and later[0] - earlier[0] >= stuck_after / 2)
               for earlier, later in itertools.pairwise(ordered))


class Timed:
    """Runs every ``period`` seconds and notes when each slice started and ended."""

    def __init__(self, period: float, log: list[tuple[float, float]]) -> None:
        self.period = period
        self.log = log
        self.runs = 0

    def run_slice(self, now: float) -> float | None:
        start = time.monotonic()
        self.runs += 1
        time.sleep(0.0003)  # without the GIL: another worker could run meanwhile
        self.log.append((start, time.monotonic()))
        return now + self.period


class Once:
    """Runs once and says so."""

    def __init__(self) -> None:
        self.ran = threading.Event()

    def run_slice(self, now: float) -> float | None:
        self.ran.set()
        return None


@contextmanager
def running(scheduler: ScriptScheduler, workers: int, tasks: Sequence[Any]) -> Iterator[None]:
    """``workers`` threads running ``tasks`` (each woken once) until the block
    ends; then every worker must have ended."""
    scheduler.start(workers)
    try:
        for task in tasks:
            scheduler.wake(task)
        yield
    finally:
        assert scheduler.close(timeout=5.0) == 0

