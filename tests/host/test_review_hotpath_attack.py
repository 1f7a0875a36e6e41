"""Hostile review of issue 16's hot path (commit 5a1c76f): ``c_deliver`` holding
``handlers``/``message_handler``/``delivering`` as its own upvalues, and
``quick_shared`` knowing its library by identity with one cache table per kind.

Each differential scenario runs on a native Runtime (c_deliver, quick_shared)
and on ``Runtime(native=False)`` (the Lua ``deliver`` and ``get_handle``, the
reference) in the same test and compares what the scripts saw and what the
host recorded. The hang test is one found on the way (both paths, older
than the commit under review); it passes since it was fixed.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.child_process import run_child
from tests.host.both_paths import Clock, delivery_path  # noqa: F401 (autouse fixture)

from moonbus.lua.fastcall import native_available
from moonbus.runtime import Runtime

pytestmark = [
    pytest.mark.timeout(120, method="thread"),
    pytest.mark.skipif(not native_available(), reason="C delivery not built"),
]



def _run(tmp_path: Path, native: bool, text: str, emits: list[tuple[str, dict[str, Any]]],
         *, deferred: bool = False, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    clock = Clock()
    rt = Runtime(threaded=False, clock=clock, native=native,
                 event_delivery="deferred" if deferred else "immediate")
    try:
        for key, value in (settings or {}).items():
            setattr(rt.settings, key, value)
        d = tmp_path / ("n" if native else "p")
        d.mkdir(exist_ok=True)
        path = d / "attack.lua"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        h = rt.load(path)
        h.start()
        for name, data in emits:
            rt.bus.emit(name, data, tick=7)
            if deferred:
                rt.run_due(clock.now)
        for _ in range(3):
            clock.now += 0.1
            rt.run_due(clock.now)
        errors = [re.sub(r"0x[0-9a-f]+", "0x?", re.sub(r"/\S*/attack\.lua", "attack.lua", e))
                  for e in h.errors]
        return {"out": h.shared.string("out").get(), "errors": errors, "status": h.status,
                "handler_errors": h.handler_errors}
    finally:
        rt.close()


def _both(tmp_path: Path, text: str, emits: list[tuple[str, dict[str, Any]]],
          **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return _run(tmp_path, True, text, emits, **kw), _run(tmp_path, False, text, emits, **kw)


# `shared` is redefined by the script below: OUT and S keep the real library.
SELVES = """
local OUT, S = {}, shared
local function try(label, f, ...)
  local r = table.pack(pcall(f, ...))
  local parts = {}
  for i = 1, r.n do parts[i] = (tostring(r[i]):gsub("0x%x+", "0x?")) end
  OUT[#OUT + 1] = label .. " | " .. table.concat(parts, ",")
end
events:on("go", function(e)
  try("events", shared.int, events, "a")
  try("shared shared", shared.int, shared, shared, "a")
  try("logger", shared.int, logger, "a")
  try("stats", shared.int, stats, "a")
  try("options", shared.int, options, "a")
  try("nil", shared.int, nil, "a")
  try("false", shared.int, false, "a")
  try("nan", shared.int, 0/0, "a")
  try("function", shared.int, print, "a")
  try("thread", shared.int, coroutine.create(print), "a")
  try("handle as self", shared.int, shared:int("a"), "a")
  try("number name", shared.int, shared, 5)
  try("self only", shared.int, shared)
  try("extra arguments", shared.int, shared, "a", "b", "c")
  try("string first", shared.int, "a", "b")
  local named = setmetatable({}, {__tostring = function() return "a" end})
  try("tostring name", shared.int, shared, named)
  try("other kind, same name", shared.string, "a")
  try("third kind", shared.float, shared, "a")
  try("not the same handle", function() return rawequal(shared:int("a"), shared:float("a")) end)
  try("same handle", function()
    local x = shared:int("k")
    return rawequal(x, shared.int(events, "k")) and rawequal(x, shared.int("k"))
  end)
  shared:remove("a")
  try("removed, cached", shared.int, shared, "a")
  shared:remove("a")
  shared:string("a"):set("x")
  try("re-set to a string", shared.int, shared, "a")
  try("float now", shared.float, shared, "a")
  try("string now", function() return shared:string("a"):get() end)
  shared:clear()
  try("after clear", shared.int, shared, "a")
  local real = shared
  shared = events
  try("global shared = events", function() local h = shared:int("q") return h end)
  shared = setmetatable({}, {__index = real})
  try("global shared = a lookalike", function() local h = shared:int("q") return h end)
  shared = real
  S:string("out"):set(table.concat(OUT, "\\n"))
end)
"""


def test_weird_selves_names_and_kind_changes_read_as_on_the_lua_path(tmp_path: Path) -> None:
    native, python = _both(tmp_path, SELVES, [("go", {})])
    assert native == python
    lines = native["out"].split("\n")
    assert "events | true,shared int a" in lines
    assert "shared shared | false,shared:int: name must be a string, got table" in lines
    assert ("re-set to a string | false,attack.lua:4: shared key 'a' holds a string, not an int"
            in lines)
    assert ("global shared = a lookalike | false,attack.lua:47: shared:int: name must be a "
            "string, got table") in lines


CASCADE = """
local OUT = {}
local function add(s) OUT[#OUT + 1] = s; shared:string("out"):set(table.concat(OUT, ";")) end
local co
local ok0, seq0 = pcall(events.emit, "boot", {})
add("chunk " .. tostring(ok0) .. " " .. tostring(seq0))
events:on("e", function(e)
  add("e " .. e.seq .. " " .. tostring(e.k))
  if e.k == "co" then
    co = coroutine.create(function()
      while true do
        local ok, r = pcall(events.emit, "f", {d = 1})
        add("co " .. tostring(ok) .. " " .. tostring(r))
        coroutine.yield()
      end
    end)
  elseif e.k == "resume" then
    coroutine.resume(co)
  elseif e.k == "err" then
    events:emit("f", {d = 1})
    error("boom")
  elseif e.k == "sub" then
    events:on("e", function(e2)
      local ok, r = pcall(events.emit, "f", {d = 1})
      add("inner " .. e2.seq .. " " .. tostring(ok) .. " " .. tostring(r))
    end)
  end
end)
events:on("f", function(e)
  local ok, r = pcall(events.emit, "f", {d = (e.d or 0) + 1})
  add("f " .. tostring(e.d) .. " " .. e.seq .. " " .. tostring(ok) .. " " .. tostring(r))
end)
events:once("e", function(e)
  local ok, r = pcall(events.emit, "f", {d = 1})
  add("once " .. tostring(ok) .. " " .. tostring(r))
end)
"""


@pytest.mark.parametrize("deferred", [False, True])
def test_cascade_accounting_of_emits_from_handlers_coroutines_and_the_chunk(
        tmp_path: Path, deferred: bool) -> None:
    # delivering.seq (set by c_deliver, or by the Lua deliver for the once
    # handler) is what events.emit passes as the cause: the refusals at
    # depth 3 and the seqs must be the same on both paths.
    emits = [("e", {"k": k}) for k in ("co", "resume", "err", "sub", "resume", "e")]
    settings = {"max_cascade_depth": 2, "max_cascade_events": 50}
    native, python = _both(tmp_path, CASCADE, emits, deferred=deferred, settings=settings)
    assert native == python
    assert native["out"].count("max_cascade_depth=2") >= 4
    assert native["handler_errors"] == 1


STALE = """
local OUT = {}
local function add(s) OUT[#OUT + 1] = s; shared:string("out"):set(table.concat(OUT, ";")) end
events:on("e", function(e) add("e") end)
events:on("x", function(e) local ok = pcall(events.emit, "y", {}) add("x->y " .. tostring(ok)) end)
events:on("y", function(e) local ok = pcall(events.emit, "z", {}) add("y->z " .. tostring(ok)) end)
function fire() events:emit("x", {}) end
"""


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("native", [True, False])
def test_a_host_call_after_a_delivery_is_not_counted_in_that_events_cascade(
        tmp_path: Path, native: bool, deferred: bool) -> None:
    def fire(earlier: list[tuple[str, dict[str, Any]]]) -> str:
        clock = Clock()
        rt = Runtime(threaded=False, clock=clock, native=native,
                     event_delivery="deferred" if deferred else "immediate")
        try:
            rt.settings.max_cascade_depth = 2
            d = tmp_path / f"{native}{deferred}{len(earlier)}"
            d.mkdir()
            (d / "s.lua").write_text(STALE, encoding="utf-8")
            h = rt.load(d / "s.lua")
            h.start()
            for name, data in earlier:
                rt.bus.emit(name, data)
            rt.run_due(1.0)
            h.call("fire")  # the host's own call: x is a top-level event
            rt.run_due(2.0)
            assert h.errors == []
            out: str = h.shared.string("out").get()
            return out.removeprefix("e;")
        finally:
            rt.close()

    assert fire([]) == "x->y true;y->z true"
    assert fire([("e", {})]) == "x->y true;y->z true"  # got: y->z false (depth 3)


HANG = '''
import sys
from pathlib import Path
from moonbus.runtime import Runtime
LUA = """
local s = shared:string("s")
s:set("hello")
local hog
local function fill(k)
  hog = {}
  local n = 0
  pcall(function() while true do n = n + 1; hog[n] = {} end end)
  for i = 1, k do hog[n - i] = nil end
end
events:on("go", function(e)
  for k = 0, 400 do
    fill(k)
    pcall(s.get, s)
    hog = nil
    collectgarbage()
  end
  shared:string("out"):set("done")
end)
"""
rt = Runtime(threaded=False, clock=lambda: 0.0, native=sys.argv[1] == "native")
rt.settings.memory_limit = 1 << 20
rt.settings.handler_timeout = 60
path = Path(sys.argv[2]) / "hog.lua"
path.write_text(LUA)
h = rt.load(path)
h.start()
rt.bus.emit("go")
print(h.shared.string("out").get())
rt.close()
'''


@pytest.mark.parametrize("native", [True, False])
def test_filling_memory_then_calling_the_host_does_not_hang(tmp_path: Path,
                                                            native: bool) -> None:
    done = run_child(HANG, "native" if native else "python", str(tmp_path), timeout=20)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("done")


NESTED = """
local OUT = {}
local function add(s) OUT[#OUT + 1] = s; shared:string("out"):set(table.concat(OUT, ";")) end
events:on("go", function(e) relay:fire() end)
events:on("x", function(e) local ok = pcall(events.emit, "y", {}) add("x->y " .. tostring(ok)) end)
events:on("y", function(e) local ok = pcall(events.emit, "z", {}) add("y->z " .. tostring(ok)) end)
function fire() events:emit("x", {}) end
"""


@pytest.mark.parametrize("native", [True, False])
def test_a_host_call_nested_in_a_handler_keeps_that_handlers_cause(
        tmp_path: Path, native: bool) -> None:
    # go (depth 0) -> relay:fire() -> h.call("fire") -> x (depth 1, caused by
    # go) -> y (2) -> z would be depth 3: refused under max_cascade_depth=2.
    # Were the nested call's cause forgotten, x would start a chain of its
    # own and z would be allowed.
    from moonbus.lua.exposure import lua_api

    rt = Runtime(threaded=False, clock=lambda: 0.0, native=native)
    try:
        rt.settings.max_cascade_depth = 2
        hosts: list[Any] = []

        @lua_api
        class Relay:
            def fire(self) -> None:
                hosts[0].call("fire")

        rt.register_api("relay", Relay())
        (tmp_path / "n.lua").write_text(NESTED, encoding="utf-8")
        hosts.append(rt.load(tmp_path / "n.lua"))
        hosts[0].start()
        rt.bus.emit("go", {})
        rt.run_due(1.0)
        assert hosts[0].errors == []
        assert hosts[0].shared.string("out").get() == "x->y true;y->z false"
    finally:
        rt.close()
