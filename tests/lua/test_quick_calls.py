"""Quick host calls (``_fastconvert.c``, ``fastconvert.native_quick_bind``):
the C closure a script's shared handles call before their host function. It
answers an int or true, and nothing (so the host function runs, and raises
its own error) for anything else: NotImplemented, an exception, arguments
other than none or one Lua integer, a result that is not an int or True."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from moonbus.lua.engine import LuaEngine
from moonbus.lua.fastconvert import native_convert_available, native_quick_bind

pytestmark = pytest.mark.skipif(
    not native_convert_available(), reason="C conversion not built (or MOONBUS_PURE_PYTHON)"
)

# Calls q as script_env.lua does; returns select("#") and the values, as strings.
PROBE = """
local q = ...
local function show(...)
  local parts = { tostring(select("#", ...)) }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    parts[#parts + 1] = math.type(v) or type(v) .. ":" .. tostring(v)
    parts[#parts + 1] = tostring(v)
  end
  return table.concat(parts, " ")
end
return show(q()), show(q(41)), show(q(1.5)), show(q(2.0)), show(q("3")), show(q(1, 2)),
       show(q(nil))
"""


class Recorder:
    """A host callable: records its calls and answers what the test says."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer(*args) if callable(self.answer) else self.answer


def _probe(engine: LuaEngine, target: Recorder) -> tuple[str, ...]:
    assert engine.quick_bind is not None
    quick = engine.quick_bind(target, id(target))
    probe = engine.compile(PROBE, "probe.lua", engine.new_env())
    return tuple(engine.call(probe, quick, limit=2.0))


def test_ints_and_true_come_back_as_lua_values(engine: LuaEngine) -> None:
    target = Recorder(lambda n=0: n + 1)
    assert _probe(engine, target) == (
        "1 integer 1", "1 integer 42", "0", "0", "0", "0", "0",
    )
    assert target.calls == [(), (41,)]  # floats, strings, two args, nil: not called
    assert _probe(engine, Recorder(True))[:2] == ("1 boolean:true true", "1 boolean:true true")


@pytest.mark.parametrize("answer", [NotImplemented, None, False, 1.5, "1", 2**64,
                                    ValueError("no"), MemoryError()], ids=repr)
def test_anything_else_answers_nothing(engine: LuaEngine, answer: Any) -> None:
    target = Recorder(answer)
    assert _probe(engine, target)[:2] == ("0", "0")
    assert target.calls == [(), (41,)]


def test_the_closure_keeps_its_object_alive(engine: LuaEngine) -> None:
    target = Recorder(5)
    quick = engine.quick_bind(target, id(target))
    keep = engine.compile("local q = ... return function() return q() end", "k.lua",
                          engine.new_env())
    caller = engine.call(keep, quick, limit=2.0)[0]
    del target, quick
    gc.collect()
    assert engine.call(caller, limit=2.0) == (5,)


def test_bind_refuses_what_is_not_an_object_and_address(engine: LuaEngine) -> None:
    bad = engine.compile("local bind = ... return pcall(bind, 1, 2)", "b.lua", engine.new_env())
    ok, message = engine.call(bad, engine.quick_bind, limit=2.0)
    assert ok is False and "expected a host object and its address" in str(message)


def test_bind_refuses_an_address_that_is_not_the_objects(engine: LuaEngine) -> None:
    """A careless (or reached) bind with another object's id, or any number,
    is refused: the closure could otherwise call whatever lives there."""
    target, other = Recorder(5), Recorder(6)
    bad = engine.compile("local bind, o, a = ... return pcall(bind, o, a)", "b.lua",
                         engine.new_env())
    for address in (id(other), id(target) + 16, 0, -1, 2**63 - 1):
        ok, message = engine.call(bad, engine.quick_bind, target, address, limit=2.0)
        assert ok is False and "the address is not the object's" in str(message)
    assert target.calls == [] and other.calls == []
    ok, _ = engine.call(bad, engine.quick_bind, target, id(target), limit=2.0)
    assert ok is True


def test_a_closure_whose_object_lupa_released_answers_nothing(engine: LuaEngine) -> None:
    """lua_close finalizes the newest objects first, so a finalizer could reach
    a closure whose object lupa's __gc already released: it must not call it."""
    target = Recorder(5)
    # lupa's own finalizer, run by hand on the closure's userdata, in a plain
    # lupa state (the sandbox refuses getmetatable of host objects and __gc)
    lua = engine.lua_module
    rt = lua.LuaRuntime()
    state = int(rt.execute('return string.format("%p", coroutine.running())'), 16)
    bind = native_quick_bind(lua, rt, state)
    assert bind is not None
    release = rt.eval(
        "function(bind, o, a) local q = bind(o, a)"
        " local before = q() getmetatable(o).__gc(o) return before, select('#', q()) end"
    )
    assert release(bind, target, id(target)) == (5, 0)  # nothing: not called
    assert target.calls == [()]
