"""Hostile review of the memory store's int cells (branch ``intcells``):
the GIL-free ``shared:int(name):increment()`` from Lua, the cells' life
(remove, clear, close, kind changes, engines and scripts going away) and the
C objects' behaviour when a careless host developer misuses them.

Every runtime test runs on the C path and on the pure-Python path
(``tests.native_paths``) and must behave the same on both. Totals are
compared exactly: an increment that lands in a cell after its key was
removed is counted through the dead cell (kept by the test), so no
increment may be lost or done twice.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moonbus.errors import ClosedError, SharedTypeError, SharedValueError
from moonbus.host.context import HostSettings
from moonbus.native import load_fast_path
from moonbus.runtime import Runtime
from moonbus.shared import INT_MAX, INT_MIN, SharedStore
from tests.native_paths import both_paths

_FAST_INT = load_fast_path("moonbus.shared._fastint", env=False).module
needs_c = pytest.mark.skipif(_FAST_INT is None, reason="the C int operations are not built")

path = both_paths(load_fast_path("moonbus.shared._fastint").on)  # as test_memory_int_cells.py

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def stepped() -> Iterator[Runtime]:
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    try:
        yield rt
    finally:
        rt.close()


def _load(rt: Runtime, tmp_path: Path, text: str, name: str = "s",
          namespace: str | None = None) -> Any:
    file = tmp_path / f"{name}.lua"
    file.write_text(textwrap.dedent(text), encoding="utf-8")
    host = rt.load(file, namespace=namespace)
    host.start()
    return host


def _logs(rt: Runtime, script: str) -> list[str]:
    return [line.msg for line in rt.recent_logs if line.script == script]


def _state(store: SharedStore) -> Any:
    return store._backend._state  # type: ignore[attr-defined]


def _plain(stored: Any) -> int:
    """A stored int's value: a cell's (alive or dead) or the int itself."""
    return stored if type(stored) is int else stored.value  # type: ignore[no-any-return]


# --------------------------------------------------------------- operands
OPERANDS = """
local h = shared:int("x")
events:on("go", function(e)
  h:increment()  -- the handle's op has the cell now (C path)
  h:decrement()
  h:add(0)
  h:subtract(0)
  local function try(label, f)
    local ok, err = pcall(f)
    logger.info(label .. " | " .. tostring(ok) .. " | " .. tostring(err)
                .. " | " .. tostring(shared:int("x"):get()))
  end
  try("inc(2^63)", function() return (h:increment(2^63)) end)
  try("inc(-2^63)", function() return (h:increment(-2^63)) end)
  try("inc(1.0)", function() return (h:increment(1.0)) end)
  try("inc(1.5)", function() return (h:increment(1.5)) end)
  try("inc(nan)", function() return (h:increment(0/0)) end)
  try("inc(huge)", function() return (h:increment(math.huge)) end)
  try("add(-huge)", function() return (h:add(-math.huge)) end)
  try("inc('1')", function() return (h:increment("1")) end)
  try("inc(true)", function() return (h:increment(true)) end)
  try("sub({})", function() return (h:subtract({})) end)
  try("add(maxint)", function() return (h:add(math.maxinteger)) end)
  try("add(1)", function() return (h:add(1)) end)
  try("dec(minint)", function() return (h:decrement(math.mininteger)) end)
  try("inc(minint)", function() return (h:increment(math.mininteger)) end)
  try("sub(-1)", function() return (h:subtract(-1)) end)
  try("dec(1)", function() return (h:decrement(1)) end)
  try("sub(minint)", function() return (h:subtract(math.mininteger)) end)
end)
"""

_RANGE = f"would leave the 64-bit range [{INT_MIN}, {INT_MAX}]"
# The ops are not tail calls (``return (h:op(x))``): a tail-called op's error
# names the calling line on the Lua path (the frame is gone) but the op's own
# line on the C path (a C function never replaces its caller's frame); see
# test_flat_shared.py. Each error names its try(...) line, 13 + its index.
OPERAND_RESULTS = [
    "inc(2^63) | false | ops.lua:9: shared int 'x': increment needs an integer, "
    "got number 9.223372036854776e+18 | 0",
    "inc(-2^63) | false | ops.lua:9: shared int 'x': increment needs an integer, "
    "got number -9.223372036854776e+18 | 0",
    "inc(1.0) | false | ops.lua:9: shared int 'x': increment needs an integer, got number 1.0 | 0",
    "inc(1.5) | false | ops.lua:9: shared int 'x': increment needs an integer, got number 1.5 | 0",
    "inc(nan) | false | ops.lua:9: shared int 'x': increment needs an integer, got number nan | 0",
    "inc(huge) | false | ops.lua:9: shared int 'x': increment needs an integer, "
    "got number inf | 0",
    "add(-huge) | false | ops.lua:9: shared int 'x': add needs an integer, got number -inf | 0",
    "inc('1') | false | ops.lua:9: shared int 'x': increment needs an integer, "
    "got string '1' | 0",
    "inc(true) | false | ops.lua:9: shared int 'x': increment needs an integer, "
    "got boolean True | 0",
    "sub({}) | false | ops.lua:9: shared int 'x': subtract needs an integer, got table | 0",
    f"add(maxint) | true | {INT_MAX} | {INT_MAX}",
    f"add(1) | false | ops.lua:9: shared int 'x': add(1) {_RANGE} (value is {INT_MAX}); "
    f"value unchanged | {INT_MAX}",
    f"dec(minint) | false | ops.lua:9: shared int 'x': decrement({INT_MIN}) {_RANGE} "
    f"(value is {INT_MAX}); value unchanged | {INT_MAX}",
    "inc(minint) | true | -1 | -1",
    "sub(-1) | true | 0 | 0",
    "dec(1) | true | -1 | -1",
    f"sub(minint) | true | {INT_MAX} | {INT_MAX}",
]


def test_odd_lua_operands_are_refused_by_name_and_change_nothing(
    stepped: Runtime, tmp_path: Path
) -> None:
    """Floats (2^63, 1.0, NaN, inf), strings, bools, tables: the key named,
    the value unchanged; the 64-bit edges from Lua's own integers, both
    ways, on a cell the op has cached (C path) and on plain ints."""
    host = _load(stepped, tmp_path, OPERANDS, name="ops")
    stepped.bus.emit("go")
    got = [line for line in _logs(stepped, "ops")]
    assert host.errors == []
    # ``sub({})`` names no type on purpose: lupa hands a Lua table over as an
    # object whose repr varies; compare the stable prefix
    assert [g.split(" got table")[0] + (" got table | 0" if " got table" in g else "")
            for g in got] == [line.replace("ops.lua:9:", f"ops.lua:{13 + i}:")
                              for i, line in enumerate(OPERAND_RESULTS)]


def test_python_operands_at_the_edges(path: str) -> None:
    store = SharedStore()
    n = store.int("n")
    n.set(INT_MAX)
    with pytest.raises(SharedValueError, match=r"shared int 'n': increment\(1\) would leave"):
        n.increment()
    with pytest.raises(SharedValueError, match=r"'n': add\(18446744073709551616\) would leave"):
        n.add(2**64)
    with pytest.raises(SharedValueError, match="'n': subtract needs an integer, got bool True"):
        n.subtract(True)
    with pytest.raises(SharedValueError, match=r"'n': increment needs an integer, got float 1\.0"):
        n.increment(1.0)  # type: ignore[arg-type]
    assert n.get() == INT_MAX
    # a delta past 64 bits whose result fits (the C cell declines, Python decides)
    assert n.add(-(2**64) + 1) == INT_MAX - 2**64 + 1 == INT_MIN
    assert n.decrement(-(2**64) + 1) == INT_MAX
    assert n.subtract(2**63 + 2**63 - 1) == INT_MIN
    with pytest.raises(SharedValueError, match=r"'n': decrement\(1\) would leave"):
        n.decrement()
    with pytest.raises(SharedValueError, match=r"'n': decrement\(-9223372036854775808\)"):
        n.set(0) or n.decrement(INT_MIN)
    assert n.get() == 0
    with pytest.raises(SharedValueError):
        n.set(2**63)
    with pytest.raises(SharedValueError):
        n.set(True)
    assert store.dump() == {"n": 0} and type(store.dump()["n"]) is int


# -------------------------------------------------------------- wrong self
WRONG_SELF = """
local x, y = shared:int("x"), shared:int("y")
events:on("go", function(e)
  local a = pcall(x.increment, y)  -- a '.' call handing another handle as self
  local b = pcall(x.increment, 5)  -- a '.' call: 5 where the handle belongs
  local c = pcall(x.increment)     -- no self at all
  logger.info("dots " .. tostring(a) .. " " .. tostring(b) .. " " .. tostring(c))
  local mt = getmetatable(x)
  logger.info(type(mt) .. " " .. tostring(mt) .. " " .. tostring(rawget(x, "increment")))
  local ok = pcall(function() x.increment = function() end end)
  logger.info("assign " .. tostring(ok))
end)
"""


def test_wrong_self_cannot_reach_another_key_or_a_python_object(
    stepped: Runtime, tmp_path: Path
) -> None:
    """A handle's methods run only on their own handle: another handle, a
    number or nothing as self is refused and changes no key; the metatable
    is a string; nothing Python leaks."""
    host = _load(stepped, tmp_path, WRONG_SELF, name="self")
    stepped.bus.emit("go")
    store = stepped.shared.namespace("self")
    assert host.errors == []
    assert _logs(stepped, "self") == ["dots false false false", "string shared int nil",
                                      "assign false"]
    assert store.dump() == {}  # neither x nor y was written


def test_a_dot_call_with_an_operand_is_refused(stepped: Runtime, tmp_path: Path) -> None:
    """``h.increment(5)`` (a '.' where ':' was meant) used to increment by 1:
    the 5 was dropped as self. A modder's typo that corrupted a counter
    without an error; the method now checks that self is its handle, on the
    C path (quick_method) and the Lua one alike, and the error names the
    method, the key and the script's line."""
    host = _load(stepped, tmp_path, """
        local x = shared:int("x")
        events:on("go", function(e) x.increment(5) end)
    """, name="dot")
    stepped.bus.emit("go")
    assert len(host.errors) == 1
    assert "dot.lua:3: shared int 'x': 'increment' must be called as a method" in host.errors[0]
    assert "x:increment" not in host.errors[0] and "handle:increment(...)" in host.errors[0]
    assert stepped.shared.namespace("dot").dump() == {}


@pytest.mark.parametrize("call", [
    "x.increment()",          # self is nil: would have incremented by 1
    "x.add(x, 2)",            # the handle is right: this one is a method call
    "x.add(2)",
    "x.get()",
    "x.set(9)",
    "x.decrement(x)",         # right too
    "x:increment(2)",
    "shared:int('y').increment(5)",
    "shared:float('f').add(1.5)",
    "shared:string('s').append('a')",
    "shared:bool('b').toggle()",
    "shared:table('t').increment('k')",
    "x.increment({})",        # another table as self
    "shared:int('x').increment(shared:int('y'), 3)",  # another handle as self
])
def test_methods_run_only_on_their_own_handle(stepped: Runtime, tmp_path: Path, call: str) -> None:
    """Every kind's methods: called with ':' (or with the handle itself
    passed first) they run; with anything else as self they raise, change
    nothing, and say which method and key."""
    host = _load(stepped, tmp_path, f"""
        local x = shared:int("x")
        x:set(1)
        events:on("go", function(e) {call} end)
    """, name="self_check")
    before = stepped.shared.namespace("self_check").dump()
    stepped.bus.emit("go")
    after = stepped.shared.namespace("self_check").dump()
    right = call.startswith(("x.add(x,", "x.decrement(x)", "x:increment"))
    if right:
        assert host.errors == [] and after != before
    else:
        assert len(host.errors) == 1, host.errors
        assert "self_check.lua:4: shared " in host.errors[0]
        assert "must be called as a method" in host.errors[0]
        assert after == before


# ---------------------------------------------------------------- kinds
def test_kind_errors_name_the_key_and_both_kinds_from_python(path: str) -> None:
    store = SharedStore()
    store.int("n").increment(7)
    for kind in ("float", "string", "bool", "table"):
        with pytest.raises(SharedTypeError) as info:
            getattr(store, kind)("n")
        assert str(info.value) == f"shared key 'n' holds an int, not a {kind}"
    handle = store.float("f")
    store.int("f").increment()
    with pytest.raises(SharedTypeError, match="shared key 'f' holds an int, not a float"):
        handle.add(1.0)
    with pytest.raises(SharedTypeError, match="shared key 'f' holds an int, not a float"):
        handle.set(2.0)
    store.remove("f")
    store.float("f").set(1.5)
    with pytest.raises(SharedTypeError, match="shared key 'f' holds a float, not an int"):
        store.int("f")
    assert store.dump() == {"f": 1.5, "n": 7}
    assert store.names() == ["f", "n"] and store.contains("n") and not store.contains("z")


# ------------------------------------------------ threads: exact totals
LOOPER = """
local n = shared:int("n")
local done = 0
events:on("go", function(e)
  for i = 1, e.k do
    n:increment()
    done = done + 1
  end
  n:add(3)
  n:subtract(2)
  done = done + 1
end)
events:on("report", function(e)
  logger.info("done " .. done)
end)
"""


def _churn_remove(store: SharedStore, name: str, stop: threading.Event, removed: list[Any],
                  at_removal: list[int]) -> None:
    """Remove ``name`` again and again, keeping what it held (a cell keeps
    counting increments that raced with its removal) and its value just
    after the removal."""
    state = _state(store)
    values = state.space(store.namespace_name)
    for _ in range(200_000):
        if stop.is_set():
            return
        with state.lock:
            current = values.get(name)
            state.drop(values, name)
            if current is not None:
                removed.append(current)
                at_removal.append(_plain(current))
        if len(removed) % 7 == 0:
            store.remove("other")  # a neighbour's cell dies too
            store.int("other").increment()


def test_removals_racing_lua_engines_and_python_threads_lose_nothing(
    tmp_path: Path, path: str
) -> None:
    """Three scripts on two workers and two Python threads increment one key
    while a third Python thread removes it over and over: the live value
    plus every removed value (dead cells keep what raced in) equals every
    increment done, exactly."""
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        hosts = [_load(rt, tmp_path, LOOPER, name=f"r{i}", namespace="race") for i in range(3)]
        store = rt.shared.namespace("race")
        removed: list[Any] = []
        at_removal: list[int] = []
        counter = store.int("n")

        def python_side() -> None:
            for i in range(3_000):
                counter.increment() if i % 2 else counter.add(1)

        threads = [threading.Thread(target=python_side) for _ in range(2)]
        stop = threading.Event()
        churn = threading.Thread(target=_churn_remove, args=(store, "n", stop, removed,
                                                             at_removal))
        threads.append(churn)
        for thread in threads:
            thread.start()
        for _ in range(40):
            rt.bus.emit("go", {"k": 3_000})
        assert rt.flush_events(30.0)
        stop.set()
        for thread in threads:
            thread.join()
        rt.bus.emit("report")
        assert rt.flush_events(30.0)
        lua_done = sum(int(m.split()[1]) for h in hosts for m in _logs(rt, h.name))
        assert lua_done == 3 * 40 * 3_001
        live = store.int("n").get() if store.contains("n") else 0
        total = live + sum(_plain(r) for r in removed)
        assert total == 2 * 3_000 + 3 * 40 * 3_001
        assert [h.handler_errors for h in hosts] == [0, 0, 0]
        # once remove returned, only the calls already past the alive check
        # may land in the old cell: at most one per worker thread
        late = [_plain(r) - a for r, a in zip(removed, at_removal, strict=True)]
        assert all(0 <= d <= 2 for d in late), max(late)
        if path == "native":
            assert all(not r.alive for r in removed)
    finally:
        rt.close()


KINDS = """
local n = shared:int("n")
local ok, bad, other = 0, 0, 0
events:on("go", function(e)
  for i = 1, e.k do
    local good, err = pcall(n.increment, n)
    if good then
      ok = ok + 1
    elseif string.find(tostring(err), "shared key 'n' holds a float, not an int", 1, true) then
      bad = bad + 1
    else
      other = other + 1
      logger.info("odd " .. tostring(err))
    end
  end
end)
events:on("report", function(e)
  logger.info("ok " .. ok .. " bad " .. bad .. " other " .. other)
end)
"""


def test_kind_flips_under_lua_threads_refuse_or_count_every_call(
    tmp_path: Path, path: str
) -> None:
    """A Python thread flips the key between an int and a float (remove,
    then the other kind) while scripts on workers increment it. Every Lua
    call either counts (in a live or a dead cell) or fails naming the key
    and both kinds; never another error, never a lost or doubled count."""
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        hosts = [_load(rt, tmp_path, KINDS, name=f"k{i}", namespace="flip") for i in range(2)]
        store = rt.shared.namespace("flip")
        state = _state(store)
        values = state.space("flip")
        removed: list[Any] = []
        stop = threading.Event()

        def flipper() -> None:
            i = 0
            while not stop.is_set() and i < 20_000:
                i += 1
                with state.lock:
                    current = values.get("n")
                    if type(current) is not float and current is not None:
                        removed.append(current)
                    state.drop(values, "n")
                if i % 2:
                    with contextlib.suppress(SharedTypeError):  # an int again first
                        store.float("n").set(0.5)

        thread = threading.Thread(target=flipper)
        thread.start()
        for _ in range(30):
            rt.bus.emit("go", {"k": 400})
        assert rt.flush_events(30.0)
        stop.set()
        thread.join()
        rt.bus.emit("report")
        assert rt.flush_events(30.0)
        lines = [m for h in hosts for m in _logs(rt, h.name)]
        assert not [m for m in lines if m.startswith("odd")], lines[:5]
        counts = [tuple(int(w) for w in m.split()[1::2]) for m in lines]
        ok = sum(c[0] for c in counts)
        assert sum(c[0] + c[1] for c in counts) == 2 * 30 * 400
        assert [c[2] for c in counts] == [0, 0]
        current = values.get("n")
        live = 0 if current is None or type(current) is float else _plain(current)
        assert live + sum(_plain(r) for r in removed) == ok
    finally:
        rt.close()


CLOSER = """
local n = shared:int("n")
local ok, closed, other = 0, 0, 0
events:on("go", function(e)
  for i = 1, e.k do
    local good, err = pcall(n.increment, n)
    if good then ok = ok + 1
    elseif tostring(err):find("the shared store is closed", 1, true) then closed = closed + 1
    else other = other + 1 end
  end
  logger.info("ok " .. ok .. " closed " .. closed .. " other " .. other)
end)
"""


def test_closing_the_store_under_lua_workers(tmp_path: Path, path: str) -> None:
    """The store closes while scripts on workers increment: every call
    before counts, every call after raises ClosedError from Lua; the final
    value (read from the dict the closed store keeps) is every success."""
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        hosts = [_load(rt, tmp_path, CLOSER, name=f"c{i}", namespace="shut") for i in range(2)]
        store = rt.shared.namespace("shut")
        store.int("n").set(0)
        values = _state(store).space("shut")
        for i in range(40):
            rt.bus.emit("go", {"k": 300})
            if i == 20:
                rt.shared.close()
        assert rt.flush_events(30.0)
        with pytest.raises(ClosedError):
            store.int("n").get()
        last = {}
        for h in hosts:
            for m in _logs(rt, h.name):
                last[h.name] = [int(w) for w in m.split()[1::2]]
        ok = sum(v[0] for v in last.values())
        assert sum(v[0] + v[1] for v in last.values()) == 2 * 40 * 300
        assert [v[2] for v in last.values()] == [0, 0]
        assert sum(v[1] for v in last.values()) > 0
        assert _plain(values["n"]) == ok
        if path == "native":
            assert values["n"].alive is False
    finally:
        rt.close()


# ------------------------------------------- engines and scripts going away
def test_unloading_scripts_with_cached_handles_while_others_run(
    tmp_path: Path, path: str
) -> None:
    """Scripts are unloaded (their engines closed, lupa's finalizers drop the
    ops and their cached cells) while their siblings on workers keep
    incrementing the same cells; then a collection. The survivors' counts
    are exact."""
    import gc

    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        keep = [_load(rt, tmp_path, LOOPER, name=f"keep{i}", namespace="life") for i in range(2)]
        gone = [_load(rt, tmp_path, LOOPER, name=f"gone{i}", namespace="life") for i in range(4)]
        for i in range(20):
            rt.bus.emit("go", {"k": 200})
            if i % 5 == 4:
                rt.unload(gone[i // 5].name)
                gc.collect()
        assert rt.flush_events(30.0)
        rt.bus.emit("report")
        assert rt.flush_events(30.0)
        kept = sum(int(m.split()[1]) for h in keep for m in _logs(rt, h.name)
                   if m.startswith("done"))
        assert kept == 2 * 20 * 201
        total = rt.shared.namespace("life").int("n").get()
        assert kept + 5 * 201 <= total <= kept + 4 * 20 * 201
        assert [h.handler_errors for h in keep] == [0, 0]
    finally:
        rt.close()


FINALIZER = """
local n = shared:int("n")
n:increment()
local after = setmetatable({}, {__gc = function() n:increment(10) end})
"""


def test_lua_finalizers_cannot_touch_handles_while_the_engine_closes(
    tmp_path: Path, path: str
) -> None:
    """A __gc finalizer would run inside lua_close (after lupa released the
    host objects the cached handle's closures hold): the sandbox refuses
    __gc, so that attack is closed; unloading a script whose handles hold
    cells leaves the store usable."""
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    try:
        from moonbus.errors import ScriptError

        with pytest.raises(ScriptError, match="__gc metamethods are not allowed"):
            _load(rt, tmp_path, FINALIZER, name="fin")
        host = _load(rt, tmp_path, """
            local n = shared:int("n")
            events:on("go", function(e) n:increment() end)
        """, name="fin2", namespace="fin")
        rt.bus.emit("go")
        store = rt.shared.namespace("fin")
        rt.unload(host.name)
        import gc

        gc.collect()
        assert store.int("n").increment() == 3  # 1 from the refused load's top level
    finally:
        rt.close()


# ------------------------------------------------------------ time limits
SPINNER = """
local n = shared:int("n")
local check = 0
count = 0
events:on("spin", function(e)
  while true do
    n:increment()
    count = count + 1
  end
end)
events:on("report", function(e)
  logger.info("count " .. count)
end)
"""


def test_the_time_limit_stops_a_tight_increment_loop_between_calls(
    tmp_path: Path, path: str
) -> None:
    """A handler spinning on the GIL-free increment is still stopped by the
    time limit (pcall cannot catch it), and the store is off by at most the
    one increment between the call and the script's own count."""
    settings = HostSettings()
    settings.handler_timeout = 0.05
    rt = Runtime(threaded=False, settings=settings)
    try:
        host = _load(rt, tmp_path, SPINNER, name="spin")
        rt.bus.emit("spin")
        rt.bus.emit("report")
        errors = host.errors
        assert len(errors) == 1 and all("time" in e for e in errors), errors
        count = int(_logs(rt, "spin")[-1].split()[1])
        value = rt.shared.namespace("spin").int("n").get()
        assert count > 1000
        assert 0 <= value - count <= 2
    finally:
        rt.close()


# -------------------------------------------------- stores of either kind
@needs_c
@pytest.mark.parametrize("store_pure", [True, False])
def test_a_store_made_on_one_path_serves_engines_on_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_pure: bool
) -> None:
    """A store made while the C path was off (plain ints) under C engines,
    and a store of cells under pure-Python engines: same values, same errors."""
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1" if store_pure else "0")
    store = SharedStore()
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "0" if store_pure else "1")
    rt = Runtime(threaded=False, clock=lambda: 0.0, shared=store)
    try:
        host = _load(rt, tmp_path, """
            local n = shared:int("n")
            events:on("go", function(e) n:increment(); shared:int("n"):add(2) end)
            events:on("big", function(e) n:add(math.maxinteger) end)
        """, name="mix")
        for _ in range(5):
            rt.bus.emit("go")
        view = store.namespace("mix")
        assert view.int("n").get() == 15
        view.int("n").increment()
        rt.bus.emit("big")
        assert view.int("n").get() == 16
        view.remove("n")
        view.float("n").set(1.0)
        rt.bus.emit("go")
        assert host.errors == [
            f"handler for 'big': mix.lua:4: shared int 'n': add({INT_MAX}) would leave the "
            f"64-bit range [{INT_MIN}, {INT_MAX}] (value is 16); value unchanged",
            "handler for 'go': mix.lua:3: shared key 'n' holds a float, not an int",
        ]
        stored = _state(view).space("mix")
        view.remove("n")
        view.int("n").increment()
        assert type(stored["n"]) is (int if store_pure else _FAST_INT.IntCell)  # type: ignore[union-attr]
    finally:
        rt.close()


# ------------------------------------------------- a careless host developer
_CRASHERS = {
    "op never initialised": "f.IntOp.__new__(f.IntOp).quick(1)",
    "op called never initialised": "f.IntOp.__new__(f.IntOp)()",
    "check never initialised": "f.KindCheck.__new__(f.KindCheck).quick()",
    "check called never initialised": "f.KindCheck.__new__(f.KindCheck)()",
    "op re-initialised with a bad state": textwrap.dedent("""
        from moonbus.shared import SharedStore
        op = SharedStore().int("n").native_ops()["increment"]
        try:
            op.__init__(values={}, name="n", state=object(), fallback=print, sign=1,
                        default_one=True)
        except (TypeError, AttributeError):
            pass
        op(1)
    """),
    "check re-initialised with a bad state": textwrap.dedent("""
        from moonbus.shared import SharedStore
        check = SharedStore().int("n").native_check(print)
        try:
            check.__init__(values={}, name="n", state=object(), kind=int, fallback=print)
        except (TypeError, AttributeError):
            pass
        check.quick()
    """),
}


@needs_c
@pytest.mark.parametrize("case", sorted(_CRASHERS))
def test_misused_c_objects_raise_instead_of_crashing(case: str, path: str) -> None:
    """IntOp / KindCheck made without ``__init__``, or re-initialised with a
    state that fails, keep NULL lock methods: calling them must raise a
    Python error, not dereference NULL (run in a child: a crash would take
    pytest down)."""
    if path != "native":
        pytest.skip("C objects only")
    code = "import moonbus.shared._fastint as f\ntry:\n" + textwrap.indent(
        _CRASHERS[case], "    ") + "\nexcept (TypeError, ValueError, AttributeError) as e:\n" \
        "    print('raised', type(e).__name__)\n"
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)},
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])


@needs_c
def test_re_initialising_a_live_op_is_refused(path: str) -> None:
    """``__init__`` on an op a Lua state holds would drop its cached cell
    (``op_clear``) from a thread that is not the state's, while the state
    reads it without the GIL: a use-after-free. Refuse a second init."""
    if path != "native":
        pytest.skip("C objects only")
    assert _FAST_INT is not None
    store = SharedStore()
    handle = store.int("n")
    op = handle.native_ops()["increment"]  # type: ignore[attr-defined]
    assert op.quick() == 1 and op.cell is not None
    with pytest.raises(TypeError):
        op.__init__(values={}, name="m", state=_state(store), fallback=print, sign=1,
                    default_one=True)
    check = handle.native_check(print)  # type: ignore[attr-defined]
    assert check.quick() is True and check.cell is not None
    with pytest.raises(TypeError):
        check.__init__(values={}, name="m", state=_state(store), kind=int, fallback=print)
    assert op.quick() == 2 and store.dump() == {"n": 2}


# ------------------------------------------------- the 64-bit edge, contended
EDGE = """
local n = shared:int("n")
local ok, over, other = 0, 0, 0
events:on("go", function(e)
  for i = 1, e.k do
    local good, err = pcall(n.increment, n)
    if good then ok = ok + 1
    elseif tostring(err):find("shared int 'n': increment(1) would leave the 64-bit range", 1,
                              true) and tostring(err):find("value unchanged", 1, true) then
      over = over + 1
    else
      other = other + 1
      logger.info("odd " .. tostring(err))
    end
  end
end)
events:on("report", function(e)
  logger.info("ok " .. ok .. " over " .. over .. " other " .. other)
end)
"""


def test_increments_at_int64_max_against_python_decrements_count_once(
    tmp_path: Path, path: str
) -> None:
    """Scripts on workers push the key against INT64 max while Python
    threads pull it back: a Lua call that overflows on the cell goes through
    ``quick``, the op and the Python method in turn (each may find room by
    then); every call must count exactly once or fail with the overflow
    error naming the key, and the value never leaves 64 bits."""
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        hosts = [_load(rt, tmp_path, EDGE, name=f"e{i}", namespace="edge") for i in range(2)]
        store = rt.shared.namespace("edge")
        counter = store.int("n")
        counter.set(INT_MAX - 50)
        pulls = 2_000

        def pull() -> None:
            for i in range(pulls):
                counter.decrement() if i % 2 else counter.subtract(1)

        threads = [threading.Thread(target=pull) for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in range(30):
            rt.bus.emit("go", {"k": 300})
        for thread in threads:
            thread.join()
        assert rt.flush_events(30.0)
        rt.bus.emit("report")
        assert rt.flush_events(30.0)
        lines = [m for h in hosts for m in _logs(rt, h.name)]
        assert not [m for m in lines if m.startswith("odd")], lines[:5]
        counts = [tuple(int(w) for w in m.split()[1::2]) for m in lines]
        assert sum(c[0] + c[1] for c in counts) == 2 * 30 * 300
        assert [c[2] for c in counts] == [0, 0]
        ok = sum(c[0] for c in counts)
        assert counter.get() == INT_MAX - 50 + ok - 2 * pulls
        assert sum(c[1] for c in counts) > 0  # the edge was hit
    finally:
        rt.close()


def test_the_time_limit_stops_increment_loops_on_workers(tmp_path: Path, path: str) -> None:
    """The same on a threaded runtime (C delivery, the watchdog's count hook
    set from its own thread while the loop runs without the GIL)."""
    settings = HostSettings()
    settings.handler_timeout = 0.05
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred", settings=settings)
    try:
        hosts = [_load(rt, tmp_path, SPINNER, name=f"w{i}", namespace="wspin") for i in range(2)]
        rt.bus.emit("spin")
        assert rt.flush_events(30.0)
        rt.bus.emit("report")
        assert rt.flush_events(30.0)
        counts = [int(_logs(rt, h.name)[-1].split()[1]) for h in hosts]
        assert all(len(h.errors) == 1 and "time limit" in h.errors[0] for h in hosts)
        value = rt.shared.namespace("wspin").int("n").get()
        assert min(counts) > 1000
        assert 0 <= value - sum(counts) <= 2 * len(hosts)
    finally:
        rt.close()


@needs_c
def test_a_runtime_with_native_off_keeps_its_store_pure_python(
    tmp_path: Path, path: str
) -> None:
    """``Runtime(native=False)`` promises "the pure-Python reference paths,
    for comparison and debugging" (runtime.py). Its own memory store must
    then hold plain ints, not C cells (on main it used no C for the store;
    the branch's MemoryState looks at MOONBUS_PURE_PYTHON only)."""
    if path != "native":
        pytest.skip("the environment already switches everything off")
    rt = Runtime(threaded=False, clock=lambda: 0.0, native=False)
    try:
        _load(rt, tmp_path, """
            events:on("go", function(e) shared:int("n"):increment() end)
        """, name="off")
        rt.bus.emit("go")
        stored = _state(rt.shared).space("off")["n"]
        assert type(stored) is int, type(stored)
    finally:
        rt.close()


@needs_c
def test_a_quick_call_that_raises_has_changed_nothing(path: str) -> None:
    """The quick host call's contract (``_fastconvert.c``): ``quick`` changes
    nothing unless it returns the value, because when it raises, Lua clears
    the error and runs the op again through lupa. ``op_try`` breaks it when
    the increment is done and then something fails: the lock's release (here)
    or ``PyLong_FromLongLong`` (MemoryError) after ``mb_cell_add``. Lua then
    increments twice for one call."""
    if path != "native":
        pytest.skip("C objects only")
    assert _FAST_INT is not None
    gate = _FAST_INT.StoreGate()

    class Lock:
        def __init__(self) -> None:
            self.inner = threading.Lock()
            self.fail = False

        def acquire(self) -> bool:
            return self.inner.acquire()

        def release(self) -> None:
            self.inner.release()
            if self.fail:
                self.fail = False
                raise RuntimeError("release failed after releasing")

    class State:
        closed = False

        def __init__(self) -> None:
            self.lock = Lock()
            self.gate = gate

    state = State()
    values: dict[str, Any] = {}
    op = _FAST_INT.IntOp(values=values, name="n", state=state, fallback=print, sign=1,
                         default_one=True)
    assert op.quick() == 1
    state.lock.fail = True
    with pytest.raises(RuntimeError):
        op.quick()
    assert values["n"].value == 1  # raised, so nothing may have changed


@needs_c
def test_a_quick_op_that_runs_out_of_memory_has_changed_nothing(path: str) -> None:
    """Every allocation of ``quick`` failing in turn (``_testcapi.set_nomemory``):
    the op either returns the new value, or raises with the value unchanged;
    after the CAS that is the undo of ``cell_apply`` (``_fastint.c``)."""
    if path != "native":
        pytest.skip("C objects only")
    testcapi = pytest.importorskip("_testcapi")
    assert _FAST_INT is not None

    class State:
        closed = False

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.gate = _FAST_INT.StoreGate()

    values: dict[str, Any] = {}
    op = _FAST_INT.IntOp(values=values, name="n", state=State(), fallback=print, sign=1,
                         default_one=True)
    assert op.quick(1000) == 1000
    outcomes = set()
    for start in range(40):
        before = values["n"].value
        try:
            testcapi.set_nomemory(start, start + 1)
            try:
                result = op.quick(1000)
            finally:
                testcapi.remove_mem_hooks()
        except MemoryError:
            assert values["n"].value == before, start
            outcomes.add("raised")
        else:
            assert result == before + 1000 == values["n"].value, start
            outcomes.add("done")
    assert outcomes == {"raised", "done"}


def test_the_admin_dump_shows_cells_as_json_ints(stepped: Runtime, tmp_path: Path) -> None:
    """``shared.dump`` (admin, HTTP console) serialises the values as JSON:
    an int cell must come out as a number."""
    _load(stepped, tmp_path, """
        local n = shared:int("n")
        events:on("go", function(e) n:add(math.maxinteger) ; shared:table("t"):set("k", 1) end)
    """, name="adm")
    stepped.bus.emit("go")
    answer = stepped.admin.call("shared.dump adm")
    assert answer.data == {"name": "adm", "shared": {"n": INT_MAX, "t": {"k": 1}}}
    assert type(answer.data["shared"]["n"]) is int
    assert answer.text == f'{{"n": {INT_MAX}, "t": {{"k": 1}}}}'


def test_closing_the_runtime_while_workers_spin_on_cells(tmp_path: Path, path: str) -> None:
    """``Runtime.close()`` while deferred handlers on workers are in long
    GIL-free increment loops: the engines are closed (lupa's finalizers drop
    the ops and their cells, on the closing thread) and the store closed,
    in some order; nothing crashes, close returns, and the store's last value
    is every increment that was counted."""
    settings = HostSettings()
    settings.handler_timeout = 5.0
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred", settings=settings)
    store = rt.shared.namespace("bye")
    values = _state(store).space("bye")
    for i in range(3):
        _load(rt, tmp_path, """
            local n = shared:int("n")
            events:on("go", function(e)
              for i = 1, 100000 do
                if not pcall(n.increment, n) then return end
              end
            end)
        """, name=f"b{i}", namespace="bye")
    for _ in range(3):
        rt.bus.emit("go")
    threading.Event().wait(0.05)
    rt.close()
    assert 0 < _plain(values["n"]) <= 3 * 3 * 100_000
