"""Scheduler workers: one runs short slices back to back, another joins when a
slice runs long, or when the schedule is behind on long slices
(``ScriptScheduler(assist_lag=..., parallel_slice=...)``, host/scheduler.py)."""

from __future__ import annotations

import threading
import time

import pytest
from tests.host.scheduler_tasks import (
    Busy,
    Once,
    Stuck,
    Ticker,
    Timed,
    one_at_a_time,
    running,
    wait_until,
)

from moonbus.host.scheduler import ScriptScheduler


def test_a_long_slice_does_not_hold_up_the_others() -> None:
    scheduler = ScriptScheduler(assist_lag=0.005)
    scheduler.start(2)
    stuck, ticker = Stuck(), Ticker(0.001)
    try:
        scheduler.wake(stuck)  # type: ignore[arg-type]
        assert stuck.entered.wait(5.0)
        scheduler.wake(ticker)  # type: ignore[arg-type]
        assert wait_until(lambda: len(ticker.threads) >= 20)
        assert scheduler.statistics().assists >= 1
    finally:
        stuck.release.set()
        assert scheduler.close(timeout=5.0) == 0


def test_short_slices_never_run_side_by_side() -> None:
    # With a lag of a second, a second worker only starts a slice beside a
    # running one when that has run for a second: here none overlap.
    scheduler = ScriptScheduler(assist_lag=1.0)
    log: list[tuple[float, float]] = []
    tickers = [Timed(0.002, log) for _ in range(5)]
    with running(scheduler, 2, tickers):
        assert wait_until(lambda: all(t.runs >= 20 for t in tickers))
        assert scheduler.statistics().assists == 0
    assert one_at_a_time(log)


def test_short_slices_never_run_side_by_side_when_behind() -> None:
    # Every task is always due (the schedule is always behind), but slices
    # are short (below parallel_slice: mostly Python), so a second worker
    # would only trade the GIL.
    scheduler = ScriptScheduler(assist_lag=0.05, parallel_slice=0.01)
    log: list[tuple[float, float]] = []
    tasks = [Timed(0.0, log) for _ in range(300)]  # 90 ms a round: 50 ms behind soon
    with running(scheduler, 2, tasks):
        assert wait_until(lambda: all(t.runs >= 5 for t in tasks))
    # (a slice that lost the CPU for 50 ms is stuck: a second worker may join it)
    assert one_at_a_time(log, stuck_after=0.05)


def test_long_slices_run_on_both_workers_when_behind() -> None:
    # Slices of 3 ms without the GIL (mostly Lua), always due: the second
    # worker joins once the schedule is behind, well before a slice is stuck.
    scheduler = ScriptScheduler(assist_lag=0.05, parallel_slice=0.001)
    tasks = [Busy(0.003) for _ in range(40)]  # 120 ms a round: 50 ms behind soon
    with running(scheduler, 2, tasks):
        assert wait_until(lambda: len({th for t in tasks for th in t.threads}) == 2)
        assert scheduler.statistics().assists >= 1


@pytest.mark.parametrize("option", ["assist_lag", "parallel_slice"])
@pytest.mark.parametrize("value", [-0.001, 1.5, float("nan")])
def test_worker_options_are_checked(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        ScriptScheduler(**{option: value})  # type: ignore[arg-type]


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


def _after_a_wait(scheduler: ScriptScheduler, push) -> None:  # type: ignore[no-untyped-def]
    """Call ``push`` and return once a worker went (back) to sleep after it."""
    waits = scheduler.statistics().waits
    push()
    assert wait_until(lambda: scheduler.statistics().waits > waits)


def test_a_worker_asleep_beside_a_fresh_slice_is_woken_for_work_behind_the_earliest() -> None:
    # Three workers. A waits beside a fresh slice for a far entry: it must
    # still be woken for an entry due sooner, pushed behind the earliest,
    # when the other two workers are blocked in host calls. It slept until
    # the far entry (50 s) and the task ran that late.
    lag = 0.5
    scheduler = ScriptScheduler(assist_lag=lag)
    scheduler.start(3)
    first, second, late = Stuck(hold=30.0), Stuck(hold=30.0), Once()
    try:
        assert wait_until(lambda: scheduler.statistics().waits >= 3)
        scheduler.wake(first)  # type: ignore[arg-type]
        assert first.entered.wait(5.0)
        # While its slice is fresh, the two other workers each wake for a new
        # earliest far entry and go back to sleep until it.
        _after_a_wait(scheduler, lambda: scheduler.schedule(
            Once(), time.monotonic() + 100))  # type: ignore[arg-type]
        _after_a_wait(scheduler, lambda: scheduler.schedule(
            Once(), time.monotonic() + 50))  # type: ignore[arg-type]
        time.sleep(lag + 0.1)  # the first slice is stuck now
        # One worker wakes for this new earliest entry and sleeps until it
        # (far enough ahead that it has not timed out when ``late`` comes)...
        now = time.monotonic()
        _after_a_wait(scheduler, lambda: scheduler.schedule(
            second, now + 2.0))  # type: ignore[arg-type]
        # ...and blocks in it: ``late``, pushed behind it, needs the third.
        scheduler.schedule(late, now + 2.1)  # type: ignore[arg-type]
        assert second.entered.wait(5.0)
        assert late.ran.wait(10.0)
    finally:
        first.release.set()
        second.release.set()
        assert scheduler.close(timeout=5.0) == 0
