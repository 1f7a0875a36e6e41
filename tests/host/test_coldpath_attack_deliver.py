"""Hostile review of c_deliver (issue 16): script_env.lua's ``deliver`` done in C.

Every scenario runs on a native Runtime (C delivery, c_deliver) and on a
pure-Python one (the Lua ``deliver``, the reference) in the same test, and
compares what the scripts saw and what the host logged. Anything that
differs is a finding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tests.host.both_paths import Clock, delivery_path  # noqa: F401 (autouse fixture)

from moonbus.lua.fastcall import native_available
from moonbus.runtime import Runtime

pytestmark = [
    pytest.mark.timeout(60, method="thread"),
    pytest.mark.skipif(not native_available(), reason="C delivery not built"),
]


def _run(tmp_path: Path, native: bool, text: str, emits: list[tuple[str, dict[str, Any]]],
         *, deferred: bool = False, memory_limit: int | None = None,
         handler_timeout: float | None = None,
         read: tuple[str, ...] = ("out",)) -> dict[str, Any]:
    clock = Clock()
    rt = Runtime(threaded=False, clock=clock, native=native,
                 event_delivery="deferred" if deferred else "immediate")
    try:
        if memory_limit is not None:
            rt.settings.memory_limit = memory_limit
        if handler_timeout is not None:
            rt.settings.handler_timeout = handler_timeout
        d = tmp_path / ("n" if native else "p")
        d.mkdir(exist_ok=True)
        path = d / "attack.lua"
        path.write_text(text, encoding="utf-8")
        h = rt.load(path)
        h.start()
        if native:
            kinds = {type(s.handler).__name__ for s in rt.bus.subscriptions()}
            assert "BoundDelivery" in kinds or deferred, kinds
        for name, data in emits:
            rt.bus.emit(name, data, tick=7)
            if deferred:
                rt.run_due(clock.now)
        for _ in range(3):
            clock.now += 0.1
            rt.run_due(clock.now)
        out = {k: h.shared.string(k).get() for k in read}
        # the native and Python runtimes write to different dirs: normalise
        errors = [re.sub(r"0x[0-9a-f]+", "0x?", re.sub(r"/\S*/attack\.lua", "attack.lua", e))
                  for e in h.errors]
        return {"out": out, "errors": errors, "status": h.status,
                "handler_errors": h.handler_errors}
    finally:
        rt.close()


def _both(tmp_path: Path, text: str, emits: list[tuple[str, dict[str, Any]]],
          **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return _run(tmp_path, True, text, emits, **kw), _run(tmp_path, False, text, emits, **kw)


APPEND = """
local function add(s)
  local o = shared:string("out")
  o:set((o:get() or "") .. s .. ";")
end
"""


@pytest.mark.parametrize("deferred", [False, True])
def test_error_values_of_every_kind_read_the_same(tmp_path: Path, deferred: bool) -> None:
    text = APPEND + """
events:on("e", function(e)
  add("in " .. e.k)
  if e.k == "str" then error("plain") end
  if e.k == "lvl0" then error("nolevel", 0) end
  if e.k == "tbl" then error({code = 1}) end
  if e.k == "nil" then error(nil) end
  if e.k == "num" then error(42) end
  if e.k == "meta" then error(setmetatable({}, {__tostring = function() return "custom" end})) end
  if e.k == "bad" then local x = nil; return x.y end
  if e.k == "yield" then coroutine.yield(1) end
  if e.k == "co" then
    local co = coroutine.wrap(function() coroutine.yield(5) error("in co") end)
    add("co " .. co())
    co()
  end
end)
"""
    kinds = ["str", "lvl0", "tbl", "nil", "num", "meta", "bad", "yield", "co"]
    native, python = _both(tmp_path, text, [("e", {"k": k}) for k in kinds], deferred=deferred)
    assert native["handler_errors"] == python["handler_errors"] == len(kinds)
    assert native["errors"] == python["errors"]
    assert native["out"] == python["out"]
    assert native["status"] == python["status"] == "running"


@pytest.mark.parametrize("deferred", [False, True])
def test_data_named_tick_type_seq_and_false_values(tmp_path: Path, deferred: bool) -> None:
    text = APPEND + """
events:on("e", function(e)
  add(tostring(e.tick) .. "/" .. tostring(e.type) .. "/" .. tostring(e.seq)
      .. "/" .. tostring(math.type(e.seq)))
end)
"""
    emits = [("e", {}), ("e", {"tick": False}), ("e", {"type": None}), ("e", {"seq": 0}),
             ("e", {"tick": "t", "type": 1.5, "seq": True})]
    native, python = _both(tmp_path, text, emits, deferred=deferred)
    assert native["out"] == python["out"]
    assert native["errors"] == python["errors"] == []


@pytest.mark.parametrize("deferred", [False, True])
def test_handlers_that_unsubscribe_and_resubscribe_during_delivery(tmp_path: Path,
                                                                   deferred: bool) -> None:
    text = APPEND + """
local subs = {}
local n = 0
subs.a = events:on("e", function(e)
  n = n + 1
  add("a" .. n)
  events:off(subs.a)
  subs.a2 = events:on("e", function() add("a2") end)
end)
events:once("e", function() add("once") end)
subs.b = events:on("e", function(e)
  add("b")
  if subs.a2 then events:off(subs.a2); subs.a2 = nil end
end)
"""
    native, python = _both(tmp_path, text, [("e", {}), ("e", {}), ("e", {})], deferred=deferred)
    assert native["out"] == python["out"]
    assert native["errors"] == python["errors"]


@pytest.mark.parametrize("deferred", [False, True])
def test_metatables_set_on_the_event_do_not_reach_the_next_handler(tmp_path: Path,
                                                                     deferred: bool) -> None:
    # If two handlers of a script shared one event table, the first could put
    # __index/__newindex on it and c_deliver's gettable/settable would run
    # them outside the handler's xpcall. Both paths must agree.
    text = APPEND + """
events:on("e", function(e)
  e.tick = nil; e.type = nil; e.seq = nil
  local ok = pcall(setmetatable, e, {
    __index = function(t, k) error("hostile __index " .. tostring(k)) end,
    __newindex = function(t, k, v) error("hostile __newindex " .. tostring(k)) end,
  })
  add("first " .. tostring(ok))
end)
events:on("e", function(e)
  add("second " .. tostring(rawget(e, "tick")) .. " " .. tostring(getmetatable(e)))
end)
"""
    native, python = _both(tmp_path, text, [("e", {"x": 1}), ("e", {"x": 2})], deferred=deferred)
    assert native["out"] == python["out"]
    assert native["errors"] == python["errors"]
    assert native["status"] == python["status"]


def test_memory_limit_inside_a_delivery(tmp_path: Path) -> None:
    text = APPEND + """
local keep = {}
events:on("e", function(e)
  if e.grow then
    local t = {} for i = 1, 1e8 do t[i] = i end
  end
  add("ok")
end)
"""
    emits = [("e", {"grow": False}), ("e", {"grow": True}), ("e", {"grow": False})]
    native, python = _both(tmp_path, text, emits, memory_limit=4 * 1024 * 1024)
    assert native["out"] == python["out"] == {"out": "ok;ok;"}
    assert native["handler_errors"] == python["handler_errors"] == 1
    assert native["errors"] == python["errors"]


def test_memory_nearly_full_before_the_delivery(tmp_path: Path) -> None:
    # Fill memory in the chunk so that c_deliver's own allocations (the
    # tick/type/seq fields) may hit the limit, not the handler's.
    text = APPEND + """
local hog = {}
local ok = pcall(function() for i = 1, 1e9 do hog[i] = i end end)
for i = 1, 64 do hog[#hog] = nil end
events:on("e", function(e) local n = e.seq end)
"""
    emits = [("e", {"a": i}) for i in range(20)]
    native, python = _both(tmp_path, text, emits, memory_limit=2 * 1024 * 1024)
    assert native["handler_errors"] == python["handler_errors"]
    assert native["errors"] == python["errors"]
    assert native["status"] == python["status"]


@pytest.mark.parametrize("deferred", [False, True])
def test_many_results_stack_overflow_and_hostile_tostring(tmp_path: Path, deferred: bool) -> None:
    # c_deliver calls the handler with LUA_MULTRET and then pushes 1-2 more
    # values without lua_checkstack; the Lua deliver returns xpcall's results.
    text = APPEND + """
events:on("e", function(e)
  add("in " .. e.k)
  if e.k == "many" then
    local t = {} for i = 1, 200000 do t[i] = i end
    return table.unpack(t)
  end
  if e.k == "few" then return false, "no" end
  if e.k == "deep" then local function f(n) return 1 + f(n + 1) end return f(1) end
  if e.k == "badstr" then
    error(setmetatable({}, {__tostring = function() return {} end}))
  end
  if e.k == "errstr" then
    error(setmetatable({}, {__tostring = function() error("again") end}))
  end
end)
"""
    kinds = ["many", "few", "deep", "badstr", "errstr", "many", "ok"]
    # "deep" recurses until Lua's stack overflows, which takes ~100 ms on a
    # 2-core machine: a longer handler limit keeps the time limit out of it
    # (it raced the overflow, on either path)
    native, python = _both(tmp_path, text, [("e", {"k": k}) for k in kinds], deferred=deferred,
                           handler_timeout=5.0)
    assert native["out"] == python["out"]
    assert native["errors"] == python["errors"]
    assert any(e.endswith("stack overflow") for e in native["errors"]), native["errors"]
    assert native["handler_errors"] == python["handler_errors"]
    assert native["status"] == python["status"] == "running"
