"""Attacks on the C host method call (``quick_invoke`` in ``_fastconvert.c``).

Each case runs the same script on the C path and on the pure-Python path
(``SandboxFactory(native=False)``) and compares what the script and the host
method see.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from moonbus.lua.exposure import lua_api
from moonbus.lua.fastconvert import native_convert_available
from moonbus.lua.lua_room import MARGIN
from moonbus.lua.sandbox import SandboxFactory

pytestmark = pytest.mark.skipif(
    not native_convert_available(), reason="C conversion not built (or MOONBUS_PURE_PYTHON)"
)


def _run(native: bool, source: str, make_api: Callable[[Any, Any], Any],
         memory_limit: int | bool | None = True) -> tuple[Any, Any, Any]:
    """(what the chunk returned or raised, the api object, the C counters or None)."""
    factory = SandboxFactory(native=native)
    try:
        engine = factory.create("attack", memory_limit=memory_limit)
        env = engine.new_env()
        api = make_api(engine, env)
        with engine.lock:
            env["api"] = engine.converter.to_lua(api)
        code = engine.compile(source, "attack.lua", env)
        try:
            out: Any = engine.call(code, limit=10.0)
        except Exception as exc:  # compared between the paths
            out = ("raised", type(exc).__name__, str(exc))
        native_conv = engine.converter.native
        counters = None if native_conv is None else (
            native_conv.invokes_in_c, native_conv.invokes_finished_in_python,
            native_conv.invokes_fallback)
        engine.close()
        return out, api, counters
    finally:
        factory.close()


@lua_api
class CallsBack:
    """A careless host API: its method calls back into the calling engine
    from Python (reads a global of the script's environment, calls it)."""

    def __init__(self, engine: Any, env: Any) -> None:
        self.engine, self.env = engine, env
        self.seen: list[Any] = []

    def back(self, n: int) -> Any:
        callback = self.env["callback"]  # lupa's table read, on the calling state
        self.seen.append(type(callback).__name__)
        return self.engine.call(callback, n, limit=5.0)[0]

    def short(self) -> str:
        return "s"


def test_a_method_that_calls_back_into_the_engine_sees_lua_values() -> None:
    """lupa's calls into Lua take every value on the state's stack as their
    results: lupa empties the calling frame before it calls a Python function.
    quick_invoke left its own arguments there, so ``env["callback"]`` in the
    method returned a tuple (obj, name, arg, function) on the C path."""
    source = """
    function callback(n)
      if n == 0 then return api:short() .. "!" end
      return api:back(n - 1) .. n
    end
    return api:back(3)
    """
    fast, fast_api, counters = _run(True, source, CallsBack)
    slow, slow_api, _ = _run(False, source, CallsBack)
    assert slow == ("s!123",)
    assert fast == slow
    assert fast_api.seen == slow_api.seen == ["_LuaFunction"] * 4
    assert counters is not None and counters[0] == 5  # all of them in C


@lua_api
class Short:
    def text(self) -> str:
        return "y" * 200  # short enough for quick_invoke to push itself


def _near_the_limit(native: bool) -> list[str]:
    factory = SandboxFactory(native=native)
    try:
        engine = factory.create("room", memory_limit=1 << 20)
        env = engine.new_env()
        with engine.lock:
            env["api"] = engine.converter.to_lua(Short())
        code = engine.compile(
            "local ok, v = pcall(api.text, api); return ok and 'ok' or tostring(v)",
            "room.lua", env,
        )
        collect = engine.compile("collectgarbage(); collectgarbage()", "gc.lua", env)
        engine.call(code, limit=5.0)
        outcomes = []
        for extra in range(0, 420, 4):
            engine.call(collect, limit=5.0)
            engine.set_memory_budget(MARGIN + extra)  # lua_room's margin, and a little
            text = engine.call(code, limit=5.0)[0]
            outcomes.append(f"{extra}: {re.sub(r'[0-9]+ of [0-9]+ bytes free', '', text)}")
            engine.set_memory_limit(1 << 20)
        engine.close()
        return outcomes
    finally:
        factory.close()


def test_a_short_str_result_is_checked_against_the_free_memory() -> None:
    """A call is let in while the state uses less than its limit less
    lua_room.MARGIN; the Python path then refuses a str result that does not fit
    in the free memory less MARGIN (LuaRoom.admit). quick_invoke pushed short
    strs without that check: within ~300 bytes of the entry threshold the C
    path returned the string where the Python path raised LuaValueTooLarge
    (and counted a refused value)."""
    fast, slow = _near_the_limit(True), _near_the_limit(False)
    assert any("value too large for the script's Lua memory limit" in x for x in slow)
    assert any(x.endswith(": ok") for x in slow)
    assert fast == slow


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ fails too")


@lua_api
class Hostile:
    """Failures of every kind, from the method and from getattr."""

    def __init__(self, engine: Any, env: Any) -> None:
        self.calls = 0

    def fail(self, kind: int) -> Any:
        self.calls += 1
        errors: list[BaseException] = [
            KeyboardInterrupt("ki"), SystemExit(3), GeneratorExit("ge"), _Unprintable(),
            ValueError("v" * 100_000), StopIteration(), MemoryError("m"), RecursionError("r"),
        ]
        raise errors[kind - 1]

    def shadowed(self) -> int:
        self.calls += 1
        self.shadowed = 5  # type: ignore[method-assign]  # next call: 'int' is not callable
        return 1

    def __getattribute__(self, name: str) -> Any:
        if name == "fail" and object.__getattribute__(self, "calls") == 8:
            object.__setattr__(self, "calls", 9)
            raise SystemExit("from getattr")
        return object.__getattribute__(self, name)


def test_failures_of_every_kind_read_the_same_and_leave_nothing_pending() -> None:
    source = """
    local out = {}
    for kind = 1, 9 do
      local ok, e = pcall(api.fail, api, kind)
      out[#out + 1] = tostring(ok) .. " " .. string.sub(tostring(e), 1, 80) .. " #" .. #tostring(e)
    end
    for _ = 1, 3 do
      local ok, e = pcall(api.shadowed, api)
      out[#out + 1] = tostring(ok) .. " " .. tostring(e)
    end
    return table.concat(out, "\\n")
    """
    fast, fast_api, counters = _run(True, source, Hostile)
    slow, slow_api, _ = _run(False, source, Hostile)
    assert fast == slow
    assert fast_api.calls == slow_api.calls == 10
    assert counters is not None and counters[2] == 0  # nothing handed over before the call

    factory = SandboxFactory()
    try:
        engine = factory.create("pending")
        env = engine.new_env()
        with engine.lock:
            env["api"] = engine.converter.to_lua(Hostile(engine, env))
        engine.call(engine.compile(source, "pending.lua", env), limit=10.0)
        with pytest.raises(RuntimeError, match="no host method call is pending"):
            engine.converter.native.take_pending()
        engine.close()
    finally:
        factory.close()
