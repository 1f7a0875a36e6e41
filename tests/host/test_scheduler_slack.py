"""Timer slack: a threaded worker sleeps past the earliest due time by up to
``timer_slack`` so tasks due soon after it run in the same wake-up, and never
runs a task before it is due (``ScriptScheduler(timer_slack=...)``)."""

from __future__ import annotations

import threading

import pytest

from moonbus.host.scheduler import ScriptScheduler


class Once:
    """Runs once; notes the clock, the scheduler's ``now`` and its wait count."""

    def __init__(self, scheduler: ScriptScheduler) -> None:
        self.scheduler = scheduler
        self.ran = threading.Event()
        self.at_clock = 0.0
        self.now = 0.0
        self.waits = -1

    def run_slice(self, now: float) -> float | None:
        self.at_clock = self.scheduler.clock()
        self.now = now
        self.waits = self.scheduler.statistics().waits
        self.ran.set()
        return None


@pytest.mark.parametrize(("slack", "same_wake"), [(0.05, True), (0.0, False)])
def test_tasks_due_close_together_share_a_wake_up_and_none_runs_early(
        slack: float, same_wake: bool) -> None:
    scheduler = ScriptScheduler(timer_slack=slack)
    scheduler.start(1)
    first, second = Once(scheduler), Once(scheduler)
    try:
        start = scheduler.clock()
        scheduler.schedule(first, start + 0.02)  # type: ignore[arg-type]
        scheduler.schedule(second, start + 0.03)  # type: ignore[arg-type]
        assert first.ran.wait(5.0) and second.ran.wait(5.0)
        assert first.at_clock >= start + 0.02 and second.at_clock >= start + 0.03
        assert first.now >= start + 0.02 and second.now >= start + 0.03
        # With slack the worker slept once, to 0.02 + slack, and ran both; without,
        # it slept again between them (each wake-up costs tens of microseconds).
        assert (first.waits == second.waits) is same_wake
    finally:
        assert scheduler.close(timeout=5.0) == 0


@pytest.mark.parametrize("slack", [-0.001, 0.051])
def test_timer_slack_is_checked(slack: float) -> None:
    with pytest.raises(ValueError, match="timer_slack must be in"):
        ScriptScheduler(timer_slack=slack)

