"""``ScriptHost.call``: the host asks a running script for a value.

Which engine: the **event engine**. The main engine belongs to the script
thread and is often suspended in the middle of ``poll`` (a ``sleep``) or
``on_start``; running other code in it then would interleave with a
coroutine half-way through. The event engine runs short calls on whatever
thread delivers events, each under the engine lock and the handler time
limit, which is exactly what a host query is. So a called function sees the
script's top-level state and what its event handlers changed, not locals
that only ``poll`` updated (those live in the main engine; share them
through ``shared``, as SPEC §4 says).

What is called: the global function ``fn_name``, or, for a script whose
chunk returns a table, its method ``fn_name`` (called with the table as
``self``). Arguments go to Lua and results come back as plain data, with
the same conversion as events; one result is returned as itself, none as
``None``, several as a tuple.

Threads: any. The engine lock serialises the call with event delivery;
a call from inside a handler of the same script (same thread) nests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moonbus.errors import ClosedError, ScriptError, ScriptTimeout
from moonbus.lua.value_path import describe_conversion_error

if TYPE_CHECKING:
    from moonbus.host.engine_side import ScriptEngine

__all__ = ["call_in_engine", "enter_host_call"]


def call_in_engine(side: ScriptEngine | None, script: str, status: str, fn_name: str,
                   args: tuple[Any, ...], limit: float | None) -> Any:
    """Run ``fn_name(*args)`` in ``side`` (a script's event engine); see the module."""
    what = f"script {script!r}: call {fn_name}()"
    if not isinstance(fn_name, str) or not fn_name:
        raise TypeError(f"{what}: the function name must be a non-empty string")
    if side is None or status not in ("starting", "running"):
        raise ScriptError(f"{what}: the script is {status}, not running")
    engine = side.engine
    try:
        with engine.lock:
            enter_host_call(side, limit)
            func, self_args = _find(side, fn_name, what)
            try:
                lua_args = [side.converter.to_lua(a) for a in args]
            except TypeError as exc:
                raise TypeError(f"{what}: {describe_conversion_error(list(args), 'args', exc)}"
                                ) from exc
            results = engine.call(func, *self_args, *lua_args, limit=limit)
            try:
                values = tuple(side.converter.to_py(r) for r in results)
            except TypeError as exc:
                raise TypeError(f"{what}: return value: {exc}") from exc
    except ClosedError as exc:
        raise ScriptError(f"{what}: the script stopped") from exc
    except ScriptTimeout as exc:
        raise ScriptTimeout(f"{what}: {exc}", where=exc.where,
                            traceback=exc.lua_traceback) from exc
    except ScriptError as exc:
        if str(exc).startswith(what):
            raise
        raise type(exc)(f"{what}: {exc}", where=exc.where, traceback=exc.lua_traceback) from exc
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def enter_host_call(side: ScriptEngine, limit: float | None) -> None:
    """Before the host's own call into ``side`` (``ScriptHost.call``, the
    admin eval): unless a handler is running (the call is nested in it and
    inherits its cause), what the call emits is caused by no event, not by
    the last event handled. Caller holds the engine's lock."""
    if not side.engine.in_call:
        side.engine.call(side.forget_cause, limit=limit)


def _find(side: ScriptEngine, fn_name: str, what: str) -> tuple[Any, tuple[Any, ...]]:
    engine = side.engine
    table = side.returned_table
    if table is not None:
        method = table[fn_name]
        if engine.lua_type(method) == "function":
            return method, (table,)
    func = side.global_function(fn_name)
    if func is None:
        raise ScriptError(f"{what}: the script has no function {fn_name!r}")
    return func, ()
