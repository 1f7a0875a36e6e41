"""The deferred-delivery queue is bounded (``HostSettings.max_queued_deliveries``).

Why: pacing never makes the host wait for slow handlers (their deliveries
cost the event thread too much CPU, ``moonbus.host.deferred``), so when
handlers are slower than the events emitted, the queue is what absorbs the
difference. Past the bound a delivery is not queued: dropped, counted
(``deferred_statistics().dropped``) and logged, never an ever-growing queue.
A stepped runtime keeps everything queued until ``run_due``, which makes
the counts exact. Runs on the C queue and the Python reference queue (conftest).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.host.started_script import load_started

from moonbus.errors import ConfigError
from moonbus.host.context import HostSettings
from moonbus.runtime import Runtime

COUNTING = 'events:on("e", function(e) shared:int("n"):increment() end)'


def _stepped(bound: int) -> Runtime:
    return Runtime(threaded=False, clock=lambda: 0.0, event_delivery="deferred",
                   settings=HostSettings(max_queued_deliveries=bound))


_load = load_started


def test_past_the_bound_deliveries_are_dropped_counted_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with _stepped(5) as rt:
        host = _load(rt, tmp_path, COUNTING)
        rt.run_due(0.0)
        for i in range(12):
            rt.bus.emit("e", {"i": i})
        stats = rt.deferred_statistics()
        assert stats is not None
        assert (stats.pending, stats.dropped, stats.peak) == (5, 7, 5)
        with caplog.at_level(logging.ERROR, logger="moonbus.events"):
            rt.run_due(0.0)
        assert host.shared.int("n").get() == 5  # the first five, in order
        assert any("max_queued_deliveries=5" in r.getMessage() and "7 deliveries dropped"
                   in r.getMessage() for r in caplog.records), caplog.records
        # room again: later events are queued and delivered
        rt.bus.emit("e", {"i": 12})
        rt.run_due(0.0)
        assert host.shared.int("n").get() == 6
        stats = rt.deferred_statistics()
        assert stats is not None and stats.dropped == 7 and stats.pending == 0


def test_the_bound_counts_deliveries_not_events(tmp_path: Path) -> None:
    # Two scripts with a handler each: one event is two deliveries.
    with _stepped(4) as rt:
        a = _load(rt, tmp_path, COUNTING, "a")
        b = _load(rt, tmp_path, COUNTING, "b")
        rt.run_due(0.0)
        for i in range(3):
            rt.bus.emit("e", {"i": i})
        stats = rt.deferred_statistics()
        assert stats is not None and (stats.pending, stats.dropped) == (4, 2)
        rt.run_due(0.0)
        assert a.shared.int("n").get() + b.shared.int("n").get() == 4


def test_the_bound_applies_from_the_next_drain(tmp_path: Path) -> None:
    with _stepped(1_000) as rt:
        host = _load(rt, tmp_path, COUNTING)
        rt.run_due(0.0)
        rt.settings.max_queued_deliveries = 2
        rt.run_due(0.0)  # a drain: the new bound reaches the queue
        for i in range(4):
            rt.bus.emit("e", {"i": i})
        rt.run_due(0.0)
        stats = rt.deferred_statistics()
        assert stats is not None and stats.dropped == 2
        assert host.shared.int("n").get() == 2


def test_by_default_the_queue_is_bounded() -> None:
    assert HostSettings().max_queued_deliveries == 250_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_a_bad_bound_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_queued_deliveries"):
        HostSettings(max_queued_deliveries=bad)  # type: ignore[arg-type]
