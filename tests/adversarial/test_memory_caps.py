"""SPEC §4b: host-side memory per script is capped.

Each attack runs beside a well-behaved companion script (``support_memcaps``)
and checks: the host calls return, the process's RSS grows by less than
``RSS_BOUND``, the offender gets an error naming the limit (or is stopped as
``failed`` with a reason naming it), the companion keeps its service, and the
refusal is counted in ``ScriptHost.statistics()``.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.host.context import HostSettings
from moonbus.host.memory_caps import clip
from moonbus.lua.fastcall import native_available
from moonbus.runtime import Runtime
from tests.adversarial.support_memcaps import COMPANION, MIB, RSS_BOUND, Arena, rss
from tests.native_paths import both_paths

delivery_path = both_paths(native_available())


@pytest.fixture(params=["immediate", "deferred"])
def arena(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Arena]:
    made = Arena(tmp_path, delivery=request.param)
    try:
        yield made
    finally:
        made.close()


# ------------------------------------------------------------------- log lines
def test_huge_log_lines_are_cut_and_never_accumulate(arena: Arena) -> None:
    """40 log lines of 20 MiB (800 MiB in all, and the recent-log buffer keeps
    200 lines): each line reaches every sink cut to 8 KiB with a marker."""
    gc.collect()
    before = rss()
    offender = arena.load(
        'function on_start() local s = string.rep("x", 20 * 1024 * 1024) '
        "for i = 1, 40 do logger.info(s) end end",
        "offender",
    )
    offender.start()
    arena.step()
    arena.ping(3)
    gc.collect()
    assert rss() - before < RSS_BOUND
    assert offender.status == "running"
    cut = [line for line in arena.rt.recent_logs if line.script == "offender"]
    assert len(cut) == 40
    dropped = 20 * MIB - 8 * 1024
    for line in cut:
        assert line.msg == "x" * 8192 + f"… [truncated {dropped} bytes]"
        assert len(json.dumps(line.to_dict())) < 9 * 1024  # what --log-json writes
    assert offender.statistics().limits.truncated_log_lines == 40
    assert arena.companion_pings() == 3 and arena.companion.status == "running"


def test_log_line_limit_is_a_live_setting_and_never_splits_a_character(tmp_path: Path) -> None:
    settings = HostSettings(max_log_line=10)
    arena = Arena(tmp_path, settings=settings)
    try:
        offender = arena.load('print("ééééééé")', "offender")  # 14 bytes
        offender.start()
        line = next(x.msg for x in arena.logs if x.script == "offender")
        assert line == "ééééé… [truncated 4 bytes]"
        settings.max_log_line = 100
        offender.stop()
        offender.start()
        assert arena.logs[-1].msg == "ééééééé"
    finally:
        arena.close()


def test_error_texts_are_capped(arena: Arena) -> None:
    """A handler raising a 4 MiB message 30 times: the recent-errors buffer
    keeps short texts and the log lines are cut."""
    gc.collect()
    before = rss()
    offender = arena.load(
        'local s = string.rep("e", 4 * 1024 * 1024) '
        'events:on("ping", function() error(s) end)',
        "offender",
    )
    offender.start()
    arena.ping(30)
    gc.collect()
    assert rss() - before < RSS_BOUND
    assert offender.handler_errors == 30
    assert all(len(text) < 4 * 1024 + 64 for text in offender.errors)
    assert all("[truncated" in text for text in offender.errors)
    host_lines = [x.msg for x in arena.logs if x.script == "offender"]
    assert host_lines and all(len(m) < 8 * 1024 + 64 for m in host_lines)
    assert offender.statistics().limits.truncated_errors == 30
    assert arena.companion_pings() == 30


# ----------------------------------------------------------------------- stats
STATS_ATTACK = """
function on_start()
  local big = string.rep("v", 1024 * 1024)
  local refused = {}
  for i = 1, 600 do
    local ok, err = pcall(stats.set, "big" .. i, big .. i)
    if not ok then refused[#refused + 1] = err end
  end
  for i = 1, 300 do
    local ok, err = pcall(stats.set, "k" .. i, i)
    if not ok then refused[#refused + 1] = err end
  end
  local ok, err = pcall(stats.set, string.rep("k", 300), 1)
  refused[#refused + 1] = err
  shared:int("refused"):set(#refused)
  shared:string("first"):set(refused[1])
  shared:string("keys"):set(refused[601])
  shared:string("key"):set(refused[#refused])
  stats.set("k1", "replaced at the cap")
  stats.set("k2", nil)
  stats.set("after_remove", true)
end
"""


def test_stats_keys_and_sizes_are_capped(arena: Arena) -> None:
    gc.collect()
    before = rss()
    offender = arena.load(STATS_ATTACK, "offender")
    offender.start()
    arena.step()
    arena.ping()
    gc.collect()
    assert rss() - before < RSS_BOUND
    assert offender.status == "running", offender.errors
    shared = offender.shared
    assert shared.int("refused").get() == 600 + 44 + 1
    first = shared.string("first").get()
    assert first.startswith("offender.lua:")
    assert "over the limit of 4096 bytes (max_stats_value)" in first
    assert "256 keys, the limit (max_stats_keys); cannot add 'k257'" in shared.string("keys").get()
    assert "limit of 256 bytes (max_stats_key)" in shared.string("key").get()
    stats = offender.stats
    assert len(stats) == 256 and not any(k.startswith("big") for k in stats)
    assert stats["k1"] == "replaced at the cap" and "k2" not in stats
    assert stats["after_remove"] is True
    assert offender.statistics().limits.refused_stats == 645
    assert arena.companion_pings() == 1


# -------------------------------------------------------------- deferred queue
SLEEPY = """
function on_start()
  events:on("*", function(e) sleep(1000000) end)
end
"""


def test_a_deferred_queue_past_its_limit_fails_the_script(arena: Arena) -> None:
    """A main-engine handler on "*" that sleeps: events queue for it; at
    10,000 the script is stopped as failed, with a reason naming the limit."""
    gc.collect()
    before = rss()
    offender = arena.load(SLEEPY, "offender")
    offender.start()
    arena.step()
    arena.ping(10_050)
    arena.step()
    assert offender.status == "failed"
    reason = offender.errors[-1]
    assert "deferred queue limit of 10000 events (max_deferred_events)" in reason
    assert "not delivered" in reason
    stats = offender.statistics()
    assert stats.limits.deferred_overflows == 1 and stats.limits.deferred_peak == 10_000
    assert stats.deferred_queued == 0
    gc.collect()
    assert rss() - before < RSS_BOUND
    assert arena.companion_pings() == 10_050 and arena.companion.status == "running"
    arena.ping()
    assert arena.companion_pings() == 10_051


def test_deferred_queue_limit_is_a_setting(tmp_path: Path) -> None:
    arena = Arena(tmp_path, settings=HostSettings(max_deferred_events=5))
    try:
        offender = arena.load(SLEEPY, "offender")
        offender.start()
        arena.step()
        arena.ping(5)
        assert offender.status == "running"
        assert offender.statistics().deferred_queued == 4  # one is being handled (asleep)
        arena.ping(2)
        arena.step()
        assert offender.status == "failed"
        assert "limit of 5 events" in offender.errors[-1]
    finally:
        arena.close()


def test_deferred_queue_overflow_with_scheduler_threads(tmp_path: Path) -> None:
    """The same attack against a threaded runtime: the script thread is asleep
    in the handler while the host emits; the script fails within a bound."""
    rt = Runtime(threaded=True, workers=2, settings=HostSettings(max_deferred_events=1000))
    try:
        companion = rt.load(tmp_path / "c.lua", text=COMPANION, name="companion")
        companion.start()
        offender = rt.load(tmp_path / "o.lua", text=SLEEPY, name="offender")
        offender.start()
        deadline = time.monotonic() + 10.0
        while offender.status != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(1100):
            rt.bus.emit("ping")
        assert offender.wait(10.0) == "failed"
        assert "(max_deferred_events)" in offender.errors[-1]
        assert companion.shared.int("pings").get() == 1100
        assert companion.status == "running"
    finally:
        rt.close()


# ---------------------------------------------------------------------- emits
EMITTER = """
function on_start()
  local big = string.rep("z", 1024 * 1024)
  local refused, last = 0, nil
  for i = 1, 300 do
    local ok, err = pcall(events.emit, "big", { s = big .. i })
    if not ok then refused = refused + 1 last = err end
  end
  local many = {}
  for i = 1, 5000 do many[i] = i end
  local ok, err = pcall(events.emit, "many", many)
  if not ok then refused = refused + 1 end
  events.emit("small", { text = string.rep("s", 1000), n = 1 })
  shared:int("refused"):set(refused)
  shared:string("last"):set(last)
  collectgarbage()
end
"""


def test_big_emits_are_refused(arena: Arena) -> None:
    gc.collect()
    before = rss()
    offender = arena.load(EMITTER, "offender")
    offender.start()
    arena.step()
    arena.ping()
    gc.collect()
    assert rss() - before < RSS_BOUND
    assert offender.status == "running", offender.errors
    assert offender.shared.int("refused").get() == 301
    last = offender.shared.string("last").get()
    assert "larger than the limit of 32768 bytes (max_emit_size)" in last
    assert last.startswith("offender.lua:")
    types = [e.type for e in arena.rt.bus.log()]
    assert "small" in types and "big" not in types and "many" not in types
    assert offender.statistics().limits.refused_emits == 301
    assert arena.companion_pings() == 1


# ------------------------------------------------------------ pure helpers
def test_clip_counts_utf8_bytes() -> None:
    assert clip("abc", 3) == ("abc", 0)
    assert clip("abcd", 3) == ("abc… [truncated 1 bytes]", 1)
    assert clip("é" * 4, 5) == ("éé… [truncated 4 bytes]", 4)
    assert clip("x" * 100, 0) == ("x" * 100, 0)


CYCLES = """
function on_start()
  local t = {}
  for depth = 1, 30 do t = { t, t, t, t, t, t, t, t } end   -- 8^30 paths, 30 levels deep
  local ok, err = pcall(events.emit, "cycle", t)
  shared:string("emit"):set(err)
  ok, err = pcall(function() shared:table("t"):set("k", t) end)
  shared:string("table"):set(err)
end
"""


def test_a_table_reached_many_times_is_refused_quickly(arena: Arena) -> None:
    """30 levels of tables each holding the next 8 times: 8^30 paths to copy,
    within the depth limit. The copy is bounded by size too, for emits and for
    every other host call, so the call returns at once."""
    arena.rt.settings.max_host_value = 1024 * 1024
    offender = arena.load(CYCLES, "offender")
    offender.start()
    arena.step()  # returns: the conversions stop at their size budget
    assert "(max_emit_size)" in offender.shared.string("emit").get()
    refused = offender.shared.string("table").get()
    assert "larger than the limit of 1048576 bytes (max_host_value)" in refused
    limits = offender.statistics().limits
    assert (limits.refused_emits, limits.refused_host_values) == (1, 1)


def test_limits_are_admin_settings(tmp_path: Path) -> None:
    with Runtime(threaded=False) as rt:
        for key, value in [("max_log_line", 100), ("max_error_length", 100),
                           ("max_stats_keys", 3), ("max_stats_key", 10),
                           ("max_stats_value", 10), ("max_deferred_events", 7),
                           ("max_emit_size", 500),
                           ("max_host_value", 5000)]:
            assert rt.admin.run(f"settings.set {key} {value}") == f"{key} = {value}"
            assert getattr(rt.settings, key) == value
        assert "max_deferred_events = 7" in rt.admin.run("settings")
