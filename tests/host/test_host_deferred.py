"""Deferred event delivery (``Runtime(event_delivery="deferred")``): emit
queues, the event thread (or ``run_due`` when stepped) runs the event-engine
handlers in batches. Runs on the C path (EventQueue, its batches and
stretches) and on the pure-Python path (see conftest); both must behave the
same."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.host.started_script import load_started

from moonbus.errors import ConfigError
from moonbus.host.context import HostSettings
from moonbus.runtime import Runtime

# timed handlers and priced deliveries (conftest): no collector pass mid-test
pytestmark = pytest.mark.usefixtures("quiet_collector")

COUNTER = """
events:on("e", function(e)
  local seen = shared:table("seen")
  seen:set(tostring(e.seq), e.i)
  shared:int("n"):increment()
end)
"""


_load = load_started


@pytest.fixture
def stepped_deferred() -> Iterator[Runtime]:
    rt = Runtime(threaded=False, clock=lambda: 0.0, event_delivery="deferred")
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def threaded_deferred() -> Iterator[Runtime]:
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        yield rt
    finally:
        rt.close()


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="event_delivery must be one of immediate, deferred"):
        Runtime(threaded=False, event_delivery="later")


def test_the_c_queue_is_used_when_built(stepped_deferred: Runtime, delivery_path: str) -> None:
    assert stepped_deferred._deferred is not None
    assert stepped_deferred._deferred.native == (delivery_path == "native")


def test_handlers_run_after_emit_returns_in_seq_order(
    stepped_deferred: Runtime, tmp_path: Path
) -> None:
    rt = stepped_deferred
    host = _load(rt, tmp_path, COUNTER)
    for i in range(50):
        rt.bus.emit("e", {"i": i})
    assert rt.shared.namespace("s").int("n").get() == 0  # queued, not yet run
    assert rt._deferred is not None and rt._deferred.pending == 50
    rt.run_due()
    ns = rt.shared.namespace("s")
    assert ns.int("n").get() == 50
    seen = ns.table("seen").to_table()
    assert sorted(seen.values()) == list(range(50))
    assert host.handler_errors == 0


def test_events_emitted_by_handlers_queue_behind(stepped_deferred: Runtime, tmp_path: Path) -> None:
    rt = stepped_deferred
    _load(rt, tmp_path, """
    local order = {}
    events:on("a", function(e)
      order[#order + 1] = "a" .. e.k
      if e.k < 3 then events:emit("b", {k = e.k}) end
    end)
    events:on("b", function(e)
      order[#order + 1] = "b" .. e.k
      shared:string("order"):set(table.concat(order, ","))
    end)
    """)
    for k in (1, 2, 3):
        rt.bus.emit("a", {"k": k})
    rt.run_due()
    rt.run_due()  # the events the handlers emitted
    assert rt.shared.namespace("s").string("order").get() == "a1,a2,a3,b1,b2"


def test_a_handler_error_in_a_batch_is_counted_and_the_rest_still_run(
    stepped_deferred: Runtime, tmp_path: Path
) -> None:
    rt = stepped_deferred
    host = _load(rt, tmp_path, """
    events:on("e", function(e)
      if e.i % 4 == 2 then error("bad " .. e.i) end
      shared:int("n"):increment()
    end)
    """)
    for i in range(12):
        rt.bus.emit("e", {"i": i})
    rt.run_due()
    assert rt.shared.namespace("s").int("n").get() == 9
    assert host.handler_errors == 3
    assert "s.lua:3: bad 2" in host.errors[0]
    assert "s.lua:3: bad 10" in host.errors[-1]


def test_a_timeout_in_a_batch_stops_only_that_handler(tmp_path: Path) -> None:
    rt = Runtime(threaded=False, clock=lambda: 0.0, event_delivery="deferred",
                 settings=HostSettings(handler_timeout=0.05))
    try:
        host = _load(rt, tmp_path, """
        events:on("e", function(e)
          if e.i == 3 then while true do end end
          shared:int("n"):increment()
        end)
        """)
        for i in range(8):
            rt.bus.emit("e", {"i": i})
        started = time.monotonic()
        rt.run_due()
        assert time.monotonic() - started < 5.0
        assert rt.shared.namespace("s").int("n").get() == 7
        assert host.handler_errors == 1
        assert "time limit of 50 ms exceeded" in host.errors[0]
    finally:
        rt.close()


def _loop_taking(seconds: float) -> int:
    """Iterations of an empty Lua loop that take about ``seconds`` here."""
    import lupa.lua54 as lua

    runtime = lua.LuaRuntime()
    spin = runtime.eval("function(n) for i = 1, n do end end")
    n = 200_000
    while True:
        started = time.perf_counter()
        spin(n)
        took = time.perf_counter() - started
        if took >= 0.01:
            return int(n * seconds / took)
        n *= 4


def test_every_handler_of_a_batch_gets_its_own_time_limit(tmp_path: Path) -> None:
    # 10 handlers of ~40 ms each run in one batch (one Lua call on the C
    # path): together far over the 250 ms limit, each well under it.
    n = _loop_taking(0.04)
    rt = Runtime(threaded=False, clock=lambda: 0.0, event_delivery="deferred",
                 settings=HostSettings(handler_timeout=0.25))
    try:
        host = _load(rt, tmp_path, f"""
        events:on("e", function(e)
          for i = 1, {n} do end
          shared:int("n"):increment()
        end)
        """)
        for i in range(10):
            rt.bus.emit("e", {"i": i})
        rt.run_due()
        assert host.errors == []
        assert rt.shared.namespace("s").int("n").get() == 10
    finally:
        rt.close()


def test_threaded_delivery_keeps_order_and_flush_waits(
    threaded_deferred: Runtime, tmp_path: Path
) -> None:
    rt = threaded_deferred
    _load(rt, tmp_path, """
    local last = -1
    events:on("e", function(e)
      if e.i ~= last + 1 then shared:int("out_of_order"):increment() end
      last = e.i
      shared:int("n"):increment()
    end)
    """)
    for i in range(3000):
        rt.bus.emit("e", {"i": i})
    assert rt.flush_events(timeout=30.0)
    ns = rt.shared.namespace("s")
    assert ns.int("n").get() == 3000
    assert ns.int("out_of_order").get() == 0


def test_the_event_thread_wakes_for_a_single_event(
    threaded_deferred: Runtime, tmp_path: Path
) -> None:
    rt = threaded_deferred
    _load(rt, tmp_path, COUNTER)
    for expected in (1, 2, 3):
        time.sleep(0.05)  # the event thread is asleep by now
        rt.bus.emit("e", {"i": expected})
        deadline = time.monotonic() + 5.0
        while rt.shared.namespace("s").int("n").get() < expected:
            assert time.monotonic() < deadline, "the event thread did not wake up"
            time.sleep(0.001)


def test_stop_delivers_what_was_queued_before_it(
    threaded_deferred: Runtime, tmp_path: Path
) -> None:
    rt = threaded_deferred
    host = _load(rt, tmp_path, COUNTER)
    for i in range(500):
        rt.bus.emit("e", {"i": i})
    host.stop()
    assert rt.shared.namespace("s").int("n").get() == 500


def test_close_delivers_what_was_queued(tmp_path: Path) -> None:
    rt = Runtime(threaded=False, clock=lambda: 0.0, event_delivery="deferred")
    host = _load(rt, tmp_path, 'events:on("e", function(e) stats.set("last", e.i) end)')
    for i in range(20):
        rt.bus.emit("e", {"i": i})
    rt.close()
    assert host.stats["last"] == 19


def test_events_for_a_stopped_script_are_dropped(
    stepped_deferred: Runtime, tmp_path: Path
) -> None:
    rt = stepped_deferred
    host = _load(rt, tmp_path, COUNTER)
    other = _load(rt, tmp_path, COUNTER, name="t")
    rt.bus.emit("e", {"i": 1})
    other.stop()  # delivers the queued event first (to both scripts)
    rt.bus.emit("e", {"i": 2})
    rt.run_due()
    assert rt.shared.namespace("s").int("n").get() == 2
    assert rt.shared.namespace("t").int("n").get() == 1
    assert host.handler_errors == 0 and other.handler_errors == 0


def test_nested_payloads_and_once_handlers_take_the_python_path(
    stepped_deferred: Runtime, tmp_path: Path
) -> None:
    rt = stepped_deferred
    _load(rt, tmp_path, """
    events:on("e", function(e)
      shared:int("n"):add(e.v ~= nil and e.v.x or 1)
    end)
    events:once("e", function(e) shared:int("once"):increment() end)
    """)
    rt.bus.emit("e", {"i": 1})
    rt.bus.emit("e", {"v": {"x": 10}})
    rt.bus.emit("e", {"i": 3})
    rt.run_due()
    ns = rt.shared.namespace("s")
    assert ns.int("n").get() == 12
    assert ns.int("once").get() == 1


def test_immediate_delivery_is_unchanged(tmp_path: Path) -> None:
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    try:
        _load(rt, tmp_path, COUNTER)
        rt.bus.emit("e", {"i": 1})
        assert rt.shared.namespace("s").int("n").get() == 1  # ran inside emit
        assert rt.flush_events() is True
    finally:
        rt.close()


def test_a_watch_slot_is_claimed_once_and_only_for_its_event() -> None:
    fastcall = pytest.importorskip("moonbus.lua._fastcall")
    slot = fastcall.WatchSlot()
    assert slot.gen == 0
    assert tuple(slot) == (0.0, 0.0, None, 0)  # reads like engine.py's armed tuples
    assert slot.snapshot() == (0.0, 0.0, None, 0, 0)
    assert slot.claim(2) is False  # not the running event
    assert slot.claim(0) is True
    assert slot.claim(0) is False  # already claimed
    assert slot.gen == 1
    assert slot.snapshot() is None  # claimed: nothing for the watchdog to judge


STRETCH = """
local last, n, disorder, wide, nested = 0, 0, 0, 0, 0
events:on("e", function(e)
  if e.seq <= last then disorder = disorder + 1 end
  last = e.seq
  n = n + 1
  if e.f9 then wide = wide + 1 end
  if e.list then nested = nested + 1 end
  if e.boom then error("boom " .. e.seq) end
end)
events:on("done", function()
  shared:int("n"):set(n)
  shared:int("disorder"):set(disorder)
  shared:int("wide"):set(wide)
  shared:int("nested"):set(nested)
end)
"""


@pytest.mark.parametrize("paced", [False, True], ids=["pacing off", "paced"])
def test_a_firehose_from_another_thread_keeps_order_errors_and_every_kind_of_event(
    tmp_path: Path, delivery_path: str, paced: bool
) -> None:
    """The C queue's engine calls keep taking a script's queued events without
    the GIL while the host emits (stretches); wide events (more fields than
    are extracted at push time), nested payloads and failing handlers are
    interleaved, and all must run exactly once, in seq order. With pacing
    (the default), the emitting thread waits whenever an event that needs
    the GIL holds the queue up, so the two threads mostly take turns and a
    stretch may find nothing new: stretches are asserted with pacing off."""
    settings = HostSettings(deferred_max_lag=HostSettings().deferred_max_lag if paced else None)
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred", settings=settings)
    try:
        _firehose(rt, tmp_path, delivery_path == "native" and not paced)
    finally:
        rt.close()


def _firehose(rt: Runtime, tmp_path: Path, expect_stretches: bool) -> None:
    host = _load(rt, tmp_path, STRETCH)
    total = 30_000

    def firehose() -> None:
        for i in range(total):
            if i % 777 == 0:
                rt.bus.emit("e", {"i": i, "list": [1, 2]})
            elif i % 100 == 0:
                rt.bus.emit("e", {f"f{k}": k for k in range(10)})
            else:
                rt.bus.emit("e", {"i": i, "boom": i % 1000 == 1})

    emitter = threading.Thread(target=firehose)
    emitter.start()
    emitter.join()
    rt.bus.emit("done")
    assert rt.flush_events(timeout=60.0)
    ns = rt.shared.namespace("s")
    assert ns.int("n").get() == total
    assert ns.int("disorder").get() == 0
    assert ns.int("nested").get() == len(range(0, total, 777))
    assert ns.int("wide").get() == len([i for i in range(total) if i % 100 == 0 and i % 777])
    assert host.handler_errors == len(range(1, total, 1000))
    assert "boom" in host.errors[-1]
    queue = rt._deferred._queue if rt._deferred is not None else None
    if expect_stretches:
        assert getattr(queue, "stretched", 0) > 0, "no stretch ran"  # the C path really ran


def test_a_stretch_pauses_for_a_dense_stream_only(
    stepped_deferred: Runtime, tmp_path: Path, delivery_path: str
) -> None:
    """After its batch, an engine call looks at the queue again. It waits
    (0.1 ms) for more only when its last take was large (a dense stream,
    where waiting lets one visit take many); after a few events it never
    waits, so a sparse stream's events are not delayed by the pause."""
    if delivery_path != "native":
        pytest.skip("stretches are the C queue's")
    rt = stepped_deferred
    _load(rt, tmp_path, COUNTER)
    assert rt._deferred is not None
    queue = rt._deferred._queue
    for i in range(10):
        rt.bus.emit("e", {"i": i})
    rt.run_due()
    assert (queue.paused, queue.stretched) == (0, 0)
    # 64 (>= the dense threshold of 16, and quick to run: a stretch that
    # outlives its 20 ms deadline ends without pausing, which a loaded
    # machine could otherwise cause with a longer run)
    for i in range(64):
        rt.bus.emit("e", {"i": i})
    rt.run_due()
    assert queue.paused == 1
    assert rt.shared.namespace("s").int("n").get() == 74
