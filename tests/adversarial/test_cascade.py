"""Containment items 4-6 (SPEC §4b): event cascades, one handler budget per
script per event, handlers per script.

Each attack runs beside a well-behaved companion script and is checked on
both delivery paths (C and pure Python) and, where it applies, in both
event-delivery modes: the host's call returns within a generous bound, the
companion keeps receiving events, and the offender gets an error naming the
limit or is stopped as ``failed``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from moonbus.bus import Bus, Event
from moonbus.bus.cascade import DEFAULT_MAX_CASCADE_DEPTH, DEFAULT_MAX_CASCADE_EVENTS
from moonbus.bus.event import freeze_data
from moonbus.errors import CascadeError, ConfigError
from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.lua.fastcall import native_available
from moonbus.runtime import Runtime
from moonbus.store.base import EventStore, StoreSettings, StoreStatistics
from tests.native_paths import both_paths

delivery_path = both_paths(native_available())  # C and Python paths for every test

STORM = 'events:on("go", function(e) events:emit("go", {}) events:emit("go", {}) end)\n'
CHAIN = 'events:on("go", function(e) events:emit("go", {}) end)\n'
COMPANION = """
local n = 0
events:on("tick", function(e) n = n + 1; stats.set("ticks", n) end)
"""
HOGS = """
for i = 1, 50 do
  events:on("tick", function(e)
    shared:int("started"):increment()
    while true do end
  end)
end
"""
BOUND = 10.0  # seconds: generous, the machine is shared


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load(rt: Runtime, tmp_path: Path, name: str, text: str) -> ScriptHost:
    path = tmp_path / f"{name}.lua"
    path.write_text(text, encoding="utf-8")
    host = rt.load(path)
    host.start()
    return host


def _wait(predicate: object, timeout: float = BOUND) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return bool(predicate())  # type: ignore[operator]


@pytest.fixture(params=["immediate", "deferred"])
def runtime(request: pytest.FixtureRequest, delivery_path: str) -> Iterator[Runtime]:
    """A threaded runtime in each delivery mode; a smaller cascade count than
    the default keeps the storms short (the defaults are checked below)."""
    settings = HostSettings(max_cascade_events=2_000)
    logging.getLogger("moonbus.script").disabled = True
    try:
        with Runtime(settings=settings, event_delivery=request.param) as rt:
            yield rt
    finally:
        logging.getLogger("moonbus.script").disabled = False


def _tick_companion(rt: Runtime, companion: ScriptHost, ticks: int) -> None:
    """Emit ``ticks`` ticks: the companion must see every one of them."""
    before = companion.stats.get("ticks", 0)
    for i in range(ticks):
        rt.bus.emit("tick", tick=i)
    assert rt.flush_events(BOUND)
    assert _wait(lambda: companion.stats.get("ticks") == before + ticks)


# ----------------------------------------------------------------- cascades
def test_defaults_are_far_above_a_game() -> None:
    settings = HostSettings()
    assert (settings.max_cascade_depth, settings.max_cascade_events) == (16, 1_000)
    assert (DEFAULT_MAX_CASCADE_DEPTH, DEFAULT_MAX_CASCADE_EVENTS) == (16, 1_000)
    assert settings.max_handlers_per_script == 1_000
    assert (settings.max_handler_timeouts, settings.handler_timeout_window) == (5, 60.0)
    with pytest.raises(ConfigError, match="max_cascade_depth"):
        Bus(max_cascade_depth=0)


def test_a_doubling_storm_ends_with_an_error_and_the_host_emit_returns(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    storm = _load(rt, tmp_path, "storm", STORM)
    companion = _load(rt, tmp_path, "companion", COMPANION)
    rss = _rss_bytes()
    started = time.monotonic()
    rt.bus.emit("go")
    assert time.monotonic() - started < BOUND
    assert rt.flush_events(BOUND)
    _tick_companion(rt, companion, 5)
    stats = rt.bus.statistics()
    assert stats.cascades_cut == 1
    assert stats.last_seq == 1 + 2_000 + 5  # the storm's 2,000 events, then the ticks
    assert _wait(lambda: storm.handler_errors > 0)
    assert any("max_cascade_events=2000" in e for e in storm.errors)
    assert _rss_bytes() - rss < 150 * 1024 * 1024
    # the bus keeps working, and a second storm is cut the same way
    rt.bus.emit("go")
    assert rt.flush_events(BOUND)
    assert rt.bus.statistics().cascades_cut == 2
    _tick_companion(rt, companion, 1)
    assert len(rt.bus.cascade) < 10  # links released once delivered


def test_a_chain_is_cut_at_the_depth_limit(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    chain = _load(rt, tmp_path, "chain", CHAIN)
    rt.bus.emit("go")
    assert rt.flush_events(BOUND)
    assert rt.bus.last_seq == 1 + DEFAULT_MAX_CASCADE_DEPTH
    assert _wait(lambda: chain.handler_errors == 1)
    assert "max_cascade_depth=16" in chain.errors[-1]
    rt.bus.emit("go")  # each top-level emit has its own cascade
    assert rt.flush_events(BOUND)
    assert rt.bus.last_seq == 2 * (1 + DEFAULT_MAX_CASCADE_DEPTH)


def test_a_storm_from_main_engine_handlers_is_cut_too(runtime: Runtime, tmp_path: Path) -> None:
    """Handlers registered in on_start run later on the script thread; what
    they emit still counts against the emit that started it all."""
    rt = runtime
    storm = _load(rt, tmp_path, "storm", "function on_start()\n  " + STORM + "end\n")
    companion = _load(rt, tmp_path, "companion", COMPANION)
    assert _wait(lambda: storm.status == "running")
    rt.bus.emit("go")
    assert _wait(lambda: rt.bus.statistics().cascades_cut == 1)
    assert _wait(lambda: any("max_cascade_events=2000" in e for e in storm.errors))
    last = rt.bus.last_seq
    assert last <= 1 + 2_000
    _tick_companion(rt, companion, 3)
    storm.stop(timeout=BOUND)
    assert storm.status == "stopped"


def test_well_behaved_cascades_are_unchanged(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    _load(rt, tmp_path, "kill", """
events:on("kill", function(e)
  events:emit("xp", {n = 10})
  events:emit("loot", {item = "bones"})
end)
events:on("xp", function(e) events:emit("level_up", {}) end)
""")
    seen: list[str] = []
    rt.bus.on("*", lambda e: seen.append(e.type))
    for _ in range(3):
        rt.bus.emit("kill")
    assert rt.flush_events(BOUND)
    assert seen.count("kill") == 3 and seen.count("level_up") == 3 and len(seen) == 12
    assert rt.bus.statistics().cascades_cut == 0


def test_python_handlers_get_the_error_on_a_bare_bus() -> None:
    bus = Bus(max_cascade_events=50)
    refused: list[str] = []

    def again(event: Event) -> None:
        try:
            bus.emit("go")
            bus.emit("go")
        except CascadeError as exc:
            refused.append(str(exc))

    bus.on("go", again)
    bus.emit("go")
    assert bus.last_seq == 51
    assert refused and "max_cascade_events=50" in refused[0]
    assert bus.statistics().cascade_emits_refused == len(refused)


def test_cascade_limits_are_live_settings(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    _load(rt, tmp_path, "chain", CHAIN)
    assert rt.admin.run("settings.set max_cascade_depth 3") == "max_cascade_depth = 3"
    rt.bus.emit("go")
    assert rt.flush_events(BOUND)
    assert rt.bus.last_seq == 4


# ----------------------------------------------------------- handler budget
def test_one_budget_per_script_per_event_then_quarantine(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    hogs = _load(rt, tmp_path, "hogs", HOGS)
    companion = _load(rt, tmp_path, "companion", COMPANION)
    started = rt.shared.namespace("hogs").int("started")
    for i in range(5):
        begin = time.monotonic()
        rt.bus.emit("tick", tick=i)
        assert rt.flush_events(BOUND)
        assert time.monotonic() - begin < BOUND
        # one handler ran out the script's budget for this tick; the 49 others did not start
        assert started.get() == i + 1
    assert _wait(lambda: hogs.status == "failed")
    info = hogs.info()
    assert info.handler_timeouts == 5
    assert info.handlers_skipped >= 4 * 49
    assert "max_handler_timeouts=5" in info.quarantined
    assert any("max_handler_timeouts=5" in e for e in info.errors)
    # stopped: no more events reach it; the companion saw every tick
    rt.bus.emit("tick", tick=5)
    assert rt.flush_events(BOUND)
    assert started.get() == 5
    assert _wait(lambda: companion.stats.get("ticks") == 6)


def test_handlers_of_one_event_share_the_budget(runtime: Runtime, tmp_path: Path) -> None:
    """Five handlers of 30 ms each, each well within the 100 ms limit alone:
    together they pass it, so the later ones run under what is left (one is
    stopped) or not at all."""
    rt = runtime
    slow = _load(rt, tmp_path, "slow", """
for i = 1, 5 do
  events:on("tick", function(e)
    shared:int("started"):increment()
    local t = os.clock()
    while os.clock() - t < 0.03 do end
    shared:int("finished"):increment()
  end)
end
""")
    rt.bus.emit("tick", tick=1)
    assert rt.flush_events(BOUND)
    ns = rt.shared.namespace("slow")
    started, finished = ns.int("started").get(), ns.int("finished").get()
    assert 1 <= finished <= 3
    assert started - finished <= 1  # at most one stopped; the rest never started
    assert _wait(lambda: slow.handler_timeouts + slow.handlers_skipped == 5 - finished)
    assert slow.status == "running"  # one exhaustion is not a quarantine


# --------------------------------------------------------- handlers per script
GREEDY = """
local refused, last = 0, nil
for i = 1, 3000 do
  local ok, err = pcall(events.on, "*", function(e) end)
  if not ok then refused = refused + 1; last = err end
end
stats.set("refused", refused)
stats.set("error", tostring(last))
"""


@pytest.mark.parametrize(
    ("lifecycle", "engines"), [("", 1), ("function poll() return 1000 end", 2)]
)
def test_handlers_per_script_are_capped(
    runtime: Runtime, tmp_path: Path, lifecycle: str, engines: int
) -> None:
    rt = runtime
    greedy = _load(rt, tmp_path, "greedy", GREEDY + lifecycle)
    companion = _load(rt, tmp_path, "companion", COMPANION)
    assert greedy.stats["refused"] == 2_000
    assert "max_handlers_per_script=1000" in greedy.stats["error"]
    # Every engine that ran the chunk refused: a handler-only script has one.
    assert greedy.info().handlers_refused == engines * 2_000
    assert len(greedy.listeners()) == 1_000
    _tick_companion(rt, companion, 3)


def test_a_script_over_the_cap_without_pcall_fails_to_load(tmp_path: Path) -> None:
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        path = tmp_path / "greedy.lua"
        path.write_text('for i = 1, 200000 do events:on("*", function() end) end\n')
        host = rt.load(path)
        with pytest.raises(Exception, match="max_handlers_per_script=1000"):
            host.start()
        assert host.status == "failed"


def test_storm_from_another_thread_does_not_block_other_emitters(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    _load(rt, tmp_path, "storm", STORM)
    companion = _load(rt, tmp_path, "companion", COMPANION)
    storm_thread = threading.Thread(target=rt.bus.emit, args=("go",))
    storm_thread.start()
    _tick_companion(rt, companion, 5)
    storm_thread.join(BOUND)
    assert not storm_thread.is_alive()


class _NumberingStore(EventStore):
    """A store that assigns seqs itself (as Redis does): the bus's ordered path."""

    assigns_seq = True

    def __init__(self) -> None:
        self.settings = StoreSettings()
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def append_new(self, event_type: str, data: Mapping[str, Any] | None = None, *,
                   tick: int | None = None, ts: int, source: str) -> Event:
        with self._lock:
            event = Event(event_type, freeze_data(data or {}), len(self.events) + 1, tick, ts,
                          source)
            self.events.append(event)
            return event

    def append(self, event: Event) -> None:
        raise AssertionError("a numbering store is given new events only")

    def query(self, **kwargs: Any) -> list[Event]:
        return list(self.events)

    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        return {}

    def clear(self, event_type: str | None = None) -> int:
        return 0

    def prune(self) -> int:
        return 0

    def last_seq(self) -> int:
        return len(self.events)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(appended=len(self.events), pruned=0, stored=0, pending=0)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_storm_is_cut_on_a_bus_whose_store_numbers_the_events() -> None:
    bus = Bus(store=_NumberingStore(), max_cascade_events=100)
    refused: list[str] = []

    def again(event: Event) -> None:
        try:
            bus.emit("go")
            bus.emit("go")
        except CascadeError as exc:
            refused.append(str(exc))

    bus.on("go", again)
    bus.emit("go")
    assert bus.last_seq == 101
    assert refused and "max_cascade_events=100" in refused[0]
    bus.emit("go")
    assert bus.last_seq == 202
    assert bus.statistics().cascades_cut == 2


def test_timeouts_on_every_other_event_still_stop_the_script(
    runtime: Runtime, tmp_path: Path
) -> None:
    """A window, not "consecutive": running out on every other tick counts."""
    rt = runtime
    rt.settings.max_handler_timeouts = 3
    rt.settings.handler_timeout = 0.05
    sly = _load(rt, tmp_path, "sly", """
events:on("tick", function(e)
  if e.tick % 2 == 1 then while true do end end
end)
""")
    for i in range(8):
        rt.bus.emit("tick", tick=i)
        assert rt.flush_events(BOUND)
    assert _wait(lambda: sly.status == "failed")
    assert sly.handler_timeouts == 3
    assert "max_handler_timeouts=3" in sly.info().quarantined


def test_refusals_past_the_link_table_read_the_same() -> None:
    """Each refused emit past the table of links in flight gives one text, so
    the handler-error log counts the repeats (a count in it made every
    refusal a distinct error, each logged in full with its traceback: a
    fan-out storm logged thousands of lines)."""
    from moonbus.bus.cascade import CascadeLimits, CascadeTracker

    tracker = CascadeTracker(CascadeLimits())
    for seq in range(tracker.table_limit + 3):
        tracker.links[seq] = tracker.root()
    texts = set()
    for _ in range(2):
        tracker.links[len(tracker.links)] = tracker.root()  # the table keeps growing
        with pytest.raises(CascadeError) as caught:
            tracker.child(tracker.root())
        texts.add(str(caught.value))
    assert len(texts) == 1
    assert f"at most {tracker.table_limit} = 4 x max_cascade_events" in texts.pop()
