"""Scheduler workers: one runs short slices back to back, another joins when a
slice runs long (``ScriptScheduler(assist_lag=...)``, host/scheduler.py)."""

from __future__ import annotations

import threading
import time

import pytest

from moonbus.host.scheduler import ScriptScheduler


def _wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
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


class Stuck:
    """One slice that blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def run_slice(self, now: float) -> float | None:
        self.entered.set()
        self.release.wait(10.0)
        return None


def test_a_long_slice_does_not_hold_up_the_others() -> None:
    scheduler = ScriptScheduler(assist_lag=0.005)
    scheduler.start(2)
    stuck, ticker = Stuck(), Ticker(0.001)
    try:
        scheduler.wake(stuck)  # type: ignore[arg-type]
        assert stuck.entered.wait(5.0)
        scheduler.wake(ticker)  # type: ignore[arg-type]
        assert _wait_until(lambda: len(ticker.threads) >= 20)
        assert scheduler.statistics().assists >= 1
    finally:
        stuck.release.set()
        assert scheduler.close(timeout=5.0) == 0


def test_short_slices_stay_on_one_worker() -> None:
    # With a lag of a second, a second worker only joins when a slice has run
    # for a second or the schedule is a second behind: neither happens here.
    scheduler = ScriptScheduler(assist_lag=1.0)
    scheduler.start(2)
    tickers = [Ticker(0.002) for _ in range(5)]
    try:
        for ticker in tickers:
            scheduler.wake(ticker)  # type: ignore[arg-type]
        assert _wait_until(lambda: all(len(t.threads) >= 20 for t in tickers))
        assert len({thread for t in tickers for thread in t.threads}) == 1
        assert scheduler.statistics().assists == 0
    finally:
        assert scheduler.close(timeout=5.0) == 0


def test_without_assist_lag_every_worker_takes_due_work() -> None:
    scheduler = ScriptScheduler(assist_lag=0.0)
    scheduler.start(2)
    stuck, ticker = Stuck(), Ticker(0.001)
    try:
        scheduler.wake(stuck)  # type: ignore[arg-type]
        assert stuck.entered.wait(5.0)
        scheduler.wake(ticker)  # type: ignore[arg-type]
        assert _wait_until(lambda: len(ticker.threads) >= 5)
    finally:
        stuck.release.set()
        assert scheduler.close(timeout=5.0) == 0


@pytest.mark.parametrize("lag", [-0.001, 1.5, float("nan")])
def test_assist_lag_is_checked(lag: float) -> None:
    with pytest.raises(ValueError, match="assist_lag"):
        ScriptScheduler(assist_lag=lag)


def test_wait_idle_is_woken_without_a_new_earliest_entry() -> None:
    # _finish no longer notifies on every slice: wait_idle must still return.
    scheduler = ScriptScheduler()
    scheduler.start(2)
    stuck = Stuck()
    try:
        scheduler.schedule(Ticker(100.0), time.monotonic() + 100)  # type: ignore[arg-type]
        scheduler.wake(stuck)  # type: ignore[arg-type]
        assert stuck.entered.wait(5.0)
        threading.Timer(0.05, stuck.release.set).start()
        assert scheduler.wait_idle(stuck, timeout=5.0)  # type: ignore[arg-type]
    finally:
        stuck.release.set()
        assert scheduler.close(timeout=5.0) == 0
