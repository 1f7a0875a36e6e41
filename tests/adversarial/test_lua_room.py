"""SPEC §4b: a value too big for a script's Lua memory never hangs or aborts the host.

lupa copies Python values into Lua with unprotected allocations: past the
memory limit Lua's error jumps over lupa's GIL release (a host API's return
value: the calling thread hangs for ever) or finds no protected call (an event
payload, a job argument: the process aborts). Every way in is checked against
the state's free memory first (``moonbus.lua.lua_room``); each test runs on the
C paths and the pure-Python ones, under a thread timeout so a regression fails
instead of hanging.
"""

from __future__ import annotations

import faulthandler
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moonbus.errors import ScriptMemoryError
from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.lua.exposure import lua_api, lua_multi
from moonbus.lua.fastcall import native_available
from moonbus.lua.lua_room import LuaRoom, LuaValueTooLarge, lua_cost
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import Runner
from moonbus.runtime import Runtime
from tests.native_paths import both_paths

pytestmark = pytest.mark.timeout(120, method="thread")
path = both_paths(native_available())


@pytest.fixture(autouse=True)
def hard_timeout() -> Iterator[None]:
    """A hang here holds the GIL (the bug this file guards against), so
    pytest-timeout's thread cannot fire: faulthandler's C watchdog dumps the
    stacks and exits the process instead, failing the run."""
    faulthandler.dump_traceback_later(90, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()

MIB = 1024 * 1024
LIMIT = 2 * MIB
BIG = "x" * 3_000_000


@lua_api
class Big:
    """A game API whose answers do not fit in a 2 MiB script."""

    def text(self) -> str:
        return BIG

    def strings(self) -> list[str]:  # C path (a list of str), then generic
        return ["y" * 600_000 for _ in range(5)]

    def record(self) -> dict[str, Any]:
        return {"name": "z" * 2_500_000, "hp": 3}

    def numbers(self) -> list[int]:  # past the C path's op limit: generic path
        return list(range(200_000))

    @lua_multi
    def pair(self) -> tuple[str, str]:
        return "a" * 1_200_000, "b" * 1_200_000

    def small(self) -> str:
        return "fine"


@pytest.fixture
def rt() -> Iterator[Runtime]:
    made = Runtime(threaded=False, settings=HostSettings(memory_limit=LIMIT))
    made.register_api("big", Big())
    try:
        yield made
    finally:
        made.close()


def load(rt: Runtime, tmp_path: Path, text: str, name: str = "s") -> ScriptHost:
    file = tmp_path / f"{name}.lua"
    file.write_text(text, encoding="utf-8")
    return rt.load(file)


def refused(h: ScriptHost) -> int:
    return h.statistics().limits.refused_lua_values


@pytest.mark.parametrize("method", ["text", "strings", "record", "numbers", "pair"])
def test_api_return_too_big_is_a_catchable_error(rt: Runtime, tmp_path: Path,
                                                 method: str) -> None:
    h = load(rt, tmp_path, f"""
function on_start()
  local ok, err = pcall(function() return big:{method}() end)
  stats.set("ok", tostring(ok))
  stats.set("err", tostring(err):sub(1, 300))
  stats.set("after", big:small())
end
""")
    h.start()
    rt.run_due()
    assert h.status == "running", h.errors
    assert h.stats["ok"] == "false"
    err = h.stats["err"]
    assert f"Big:{method}()" in err
    assert "Lua memory limit (memory_limit)" in err
    assert "bytes free" in err and f"of {LIMIT} bytes" in err
    assert h.stats["after"] == "fine"  # the host and the script go on
    assert refused(h) == 1


def test_api_return_too_big_without_pcall_fails_the_script(rt: Runtime,
                                                          tmp_path: Path) -> None:
    h = load(rt, tmp_path, "function on_start() local s = big:text() end")
    h.start()
    rt.run_due()
    assert h.status == "failed"
    assert any("Big:text()" in e and "memory limit" in e for e in h.errors), h.errors
    assert refused(h) == 1


def test_api_return_too_big_in_a_handler_is_a_handler_error(rt: Runtime,
                                                           tmp_path: Path) -> None:
    h = load(rt, tmp_path, """
events:on("go", function(e) local s = big:text() end)
events:on("go", function(e) stats.set("second", "ran") end)
""")
    h.start()
    rt.run_due()
    rt.bus.emit("go")
    rt.flush_events(5.0)
    rt.run_due()
    assert h.status == "running"
    assert h.handler_errors == 1
    assert any("Big:text()" in e and "memory limit" in e for e in h.errors), h.errors
    assert h.stats["second"] == "ran"


@pytest.mark.parametrize("data", [{"s": BIG}, {"list": ["w" * 700_000] * 4}],
                         ids=["plain", "nested"])
def test_event_payload_too_big_is_a_handler_error(rt: Runtime, tmp_path: Path,
                                                  data: dict[str, Any], path: str) -> None:
    h = load(rt, tmp_path, """
events:on("big", function(e) stats.set("got", "yes") end)
events:on("small", function(e) stats.set("small", e.n) end)
""")
    h.start()
    rt.run_due()
    rt.bus.emit("big", data)
    rt.bus.emit("small", {"n": 7})
    rt.flush_events(5.0)
    rt.run_due()
    assert h.status == "running"
    assert "got" not in h.stats
    assert h.stats["small"] == 7
    assert any("memory" in e for e in h.errors), h.errors
    if path == "python":  # the C delivery copies it inside a lua_pcall: a memory error
        assert any("data" in e and "memory limit (memory_limit)" in e for e in h.errors)
        assert refused(h) == 1


def test_shared_reads_too_big_are_catchable(rt: Runtime, tmp_path: Path) -> None:
    ns = rt.shared.namespace("s")
    ns.string("long").set("q" * 1_000_000)
    ns.string("short").set("q" * 1000)
    ns.table("tab").set("k", "r" * 1_000_000)
    h = load(rt, tmp_path, """
function on_start()
  local keep = {}  -- the script's own data, using its memory
  for i = 1, 4 do keep[i] = string.rep(string.char(96 + i), 300 * 1024) end
  local a, ea = pcall(function() return shared:string("long"):get() end)
  local b, eb = pcall(function() return shared:table("tab"):get("k") end)
  stats.set("a", tostring(a) .. " " .. tostring(ea):sub(1, 200))
  stats.set("b", tostring(b) .. " " .. tostring(eb):sub(1, 200))
  stats.set("len", #shared:string("short"):get())
end
""")
    h.start()
    rt.run_due()
    assert h.status == "running", h.errors
    assert h.stats["a"].startswith("false ") and "memory limit" in h.stats["a"]
    assert "shared:string('long'):get()" in h.stats["a"]
    assert h.stats["b"].startswith("false ") and "memory limit" in h.stats["b"]
    assert h.stats["len"] == 1000  # the script goes on
    assert refused(h) == 2


def test_call_arguments_too_big_are_refused(rt: Runtime, tmp_path: Path) -> None:
    h = load(rt, tmp_path, "function size(s) return #s end")
    h.start()
    rt.run_due()
    with pytest.raises(TypeError, match="memory limit"):
        h.call("size", BIG)
    with pytest.raises(TypeError, match="memory limit"):
        h.call("size", {"s": BIG})
    assert h.call("size", "abc") == 3
    assert h.status == "running"


@pytest.mark.parametrize("args", [(BIG,), ({"s": BIG},), ("a" * 600_000, "b" * 600_000)],
                         ids=["string", "table", "together"])
def test_job_arguments_too_big_fail_the_job(args: tuple[Any, ...]) -> None:
    factory = SandboxFactory()
    runner = Runner(workers=1, factory=factory)
    try:
        future = runner.submit("local a = ... return 1", args, memory=MIB, timeout=5.0)
        with pytest.raises(ScriptMemoryError, match=r"job arguments: .*memory limit"):
            future.result(timeout=30)
        ok = runner.submit("return #(...)", ("fits",), memory=MIB, timeout=5.0)
        assert ok.result(timeout=30) == 4
    finally:
        runner.close(cancel_pending=True)
        factory.close()


def test_lua_cost_stops_early_and_counts_utf8() -> None:
    assert lua_cost("é" * 10, 1 << 30) == 40 + 20
    huge = [["x" * 100] * 1000] * 1000  # a million strings by reference
    assert lua_cost(huge, 10_000) < 10_000 + 200_000  # stopped soon after the cap
    err = LuaValueTooLarge(3_000_040, -5, LIMIT)
    assert "about 3000040 bytes, 0 of 2097152 bytes free" in str(err)


def test_admit_plain_walks_only_past_its_bound() -> None:
    """The 4-bytes-a-character bound refuses nothing by itself: an ASCII string
    over a quarter of the free memory is measured exactly and admitted."""
    import lupa.lua54 as lupa

    room = LuaRoom(lupa.LuaRuntime(max_memory=LIMIT))
    room.on_refused = lambda: counts.append(1)
    counts: list[int] = []
    free = room.free()
    assert free is not None
    text = "x" * (free[0] // 2)
    room.admit_plain({"s": text}, len(text))  # past the bound, fits exactly
    with pytest.raises(LuaValueTooLarge):
        room.admit_plain({"s": text * 3}, 3 * len(text))
    assert counts == [1]
