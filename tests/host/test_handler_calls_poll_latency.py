"""Per-script handler call counts and poll lateness (``ScriptInfo.handler_calls``,
``ScriptStatistics.poll_latency``; exposed in ``/metrics``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from moonbus import Runtime
from moonbus.host.poll_latency import POLL_LATENCY_BUCKETS, PollLatency

HANDLERS = ('events:on("hit", function(e) if e.n % 3 == 0 then error("boom") end end)\n'
            'events:on("h*", function(e) end)\n'
            'function poll() end\n')


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("delivery", ["immediate", "deferred"])
def test_handler_calls_count_every_handler_run_per_script(
        tmp_path: Path, native: bool, delivery: str) -> None:
    (tmp_path / "miner.lua").write_text(HANDLERS)
    (tmp_path / "idle.lua").write_text('events:on("other", function() end)\n')
    with Runtime(threaded=False, native=native, event_delivery=delivery) as rt:
        miner = rt.load(tmp_path / "miner.lua")
        idle = rt.load(tmp_path / "idle.lua")
        miner.start()
        idle.start()
        for n in range(1, 31):
            rt.bus.emit("hit", {"n": n}, tick=n)
            rt.run_due()
        rt.run_due()
        # two handlers each of 30 events; the 10 that raised count as calls too
        assert miner.handler_calls == 60
        assert miner.info().handler_calls == 60
        assert miner.statistics().handler_calls == 60
        assert miner.info().handler_errors == 10
        assert idle.handler_calls == 0
        miner.stop()
        rt.run_due()
        assert miner.handler_calls == 60, "kept after the engines closed"
        miner.start()
        rt.run_due()
        rt.bus.emit("hit", {"n": 1}, tick=99)
        rt.run_due()
        assert miner.handler_calls == 62, "counted across runs"


def test_handler_calls_not_run_are_not_counted(tmp_path: Path) -> None:
    (tmp_path / "s.lua").write_text('events:on("x", function() end)\n')
    with Runtime(threaded=False) as rt:
        script = rt.load(tmp_path / "s.lua")
        rt.bus.emit("x", {})  # not started: no subscription yet
        script.start()
        rt.run_due()
        rt.bus.emit("y", {})
        assert script.handler_calls == 0
        rt.bus.emit("x", {})
        assert script.handler_calls == 1


def test_poll_latency_is_the_lateness_of_each_poll(tmp_path: Path) -> None:
    now = [0.0]
    (tmp_path / "p.lua").write_text("function poll() return 100 end\n")
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        script = rt.load(tmp_path / "p.lua")
        script.start()
        rt.run_due()  # on_start, then the first poll is due now: 0 late
        first = script.statistics().poll_latency
        assert first.count == 1 and first.total == 0.0
        now[0] = 0.130  # the next poll was due at 0.100: 30 ms late
        rt.run_due()
        now[0] = 0.2005  # due at 0.200 (fixed schedule): 0.5 ms late
        rt.run_due()
        late = script.statistics().poll_latency
        assert late.count == 3 == script.info().polls
        assert late.total == pytest.approx(0.0305)
        assert late.worst == pytest.approx(0.030)
        cumulative = dict(late.buckets)
        assert cumulative[0.001] == 2 and cumulative[0.025] == 2 and cumulative[0.05] == 3
        assert cumulative[math.inf] == 3
        assert late.mean == pytest.approx(0.0305 / 3)


def test_poll_latency_buckets() -> None:
    latency = PollLatency()
    assert latency.snapshot().count == 0 and latency.snapshot().mean == 0.0
    for late in (-1.0, 0.001, 0.0011, 7.0):
        latency.record(late)
    snap = latency.snapshot()
    assert [bound for bound, _ in snap.buckets] == [*POLL_LATENCY_BUCKETS, math.inf]
    counts = dict(snap.buckets)
    assert counts[0.001] == 2  # negative counts as 0, and 0.001 is "at most 0.001"
    assert counts[0.0025] == 3 and counts[5.0] == 3 and counts[math.inf] == 4
    assert snap.worst == 7.0
