"""Wiring the C event-delivery fast path (``_fastcall.c``) to one engine.

``native_delivery`` returns a callable ``delivery(sub_id, event)`` that runs
a script's Lua ``deliver`` function for an event exactly as
``ScriptEngine.deliver`` → ``LuaEngine.call_event`` → ``_guarded`` would, in
C, and calls ``fallback(sub_id, event)`` (the Python path) for anything it
does not take. It returns None, and the caller keeps the Python path, when
the extension is not built, is switched off (``MOONBUS_PURE_PYTHON``), the
engine is not a Lua 5.4 engine, its call state is the pure-Python twin (it
was made while the C paths were off; see ``call_state.py``), or lupa's
runtime lock cannot be found.

Why the lupa lock is looked up with ``gc.get_referents``: lupa keeps it in a
private field of ``LuaRuntime``, and every access to a Lua state must hold it
(lupa's own finalizers take it from any thread to release references). The
referents of a runtime are its Python-object fields; exactly one of them is a
``FastRLock`` of the same lupa module, or the fast path is not used.

Threads: build it on the engine's owner side (the caller holds
``engine.lock``); the returned object is called on the bus's delivering
thread, which is the event engine's user.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from moonbus.native import load_fast_path

if TYPE_CHECKING:
    from moonbus.lua.engine import LuaEngine

__all__ = ["FAST_CALL", "NativeDelivery", "make_delivery_counts", "native_available",
           "native_delivery"]

_GLOBAL_KEY = "__moonbus_native_delivery"  # in the state's real _G, which scripts never see

FAST_CALL = "moonbus.lua._fastcall"  # fails to import, too, when lupa differs


class NativeDelivery(Protocol):
    """A C delivery (``_fastcall.Delivery``): ``delivery(sub_id, event)``, and
    ``bind(sub_id)``, the same for one subscription as ``handler(event)`` in one
    object (what the bus calls: a ``functools.partial`` would add its argument
    tuple and an argument copy to every call, issue 16)."""

    def __call__(self, sub_id: int, event: Any, /) -> None: ...
    def bind(self, sub_id: int, /) -> Callable[[Any], None]: ...


def make_delivery_counts(native: bool) -> Any:
    """The counters every C delivery of one runtime adds to (``_fastcall.DeliveryCounts``:
    ``taken``, ``handed_back``), or None when the C delivery is not used."""
    fast = load_fast_path(FAST_CALL, native=native)
    return None if fast.module is None else fast.module.DeliveryCounts()


def native_available() -> bool:
    """Whether the C delivery path is built and not switched off."""
    return load_fast_path(FAST_CALL).on


def _lupa_lock(runtime: Any, lua_module: Any) -> Any | None:
    lock_type = getattr(lua_module, "FastRLock", None)
    if lock_type is None:
        return None
    locks = [obj for obj in gc.get_referents(runtime) if type(obj) is lock_type]
    return locks[0] if len(locks) == 1 else None


def native_delivery(
    engine: LuaEngine,
    call_state: Any,
    runtime: Any,
    state: int,
    func: Any,
    *,
    watchdog: Any,
    end_call: Callable[[], None],
    abort_on_entry: Callable[[int], None],
    fallback: Callable[[int, Any], None],
    failed: Callable[[int, Any, Any, str | None, float | None], None],
    settings: Any,
    budget: Any = None,
    counts: Any = None,
) -> NativeDelivery | None:
    """The C delivery of ``func`` (a Lua ``deliver``) on ``engine``, or None.

    What C needs of the engine is handed in, never looked up by name:
    ``call_state`` (the engine's ``_fastcall.CallState``; a ``PyCallState``,
    made while the C paths were off, means None), ``watchdog`` (its public
    ``armed``, ``clock``, ``idle`` and ``wake``), ``end_call()`` (the engine's
    end of a call that was aborted or left coroutines) and
    ``abort_on_entry(token)``; ``engine`` itself is only the watchdog's key.

    ``settings.handler_timeout`` is read at every call, as the Python path
    does; ``failed(sub_id, result, failure, reason, limit)`` settles a call
    that did not end plainly (see ``ScriptEngine._delivery_failed``).
    ``budget``: the engine's ``HandlerBudget`` (``moonbus.host.budget``): a
    partly spent or blocked budget sends the event to ``fallback``.
    ``counts``: the runtime's ``DeliveryCounts`` (``make_delivery_counts``).
    """
    fast = load_fast_path(FAST_CALL)
    if fast.module is None:
        return None
    lua_module = engine.lua_module
    if lua_module.__name__ != fast.module.LUA_MODULE:
        return None
    if type(call_state) is not fast.module.CallState:
        return None  # a PyCallState: the engine was made with the C paths off
    lock = _lupa_lock(runtime, lua_module)
    if lock is None:
        return None
    globals_table = runtime.globals()
    globals_table[_GLOBAL_KEY] = func
    try:
        delivery: NativeDelivery = fast.module.Delivery(
            engine=engine, call_state=call_state, watchdog=watchdog, lua_module=lua_module,
            end_call=end_call, abort_on_entry=abort_on_entry, runtime=runtime, state=state,
            lupa_lock=lock,
            global_key=_GLOBAL_KEY, fallback=fallback, failed=failed, settings=settings,
            budget=budget, counts=counts,
        )
    finally:
        globals_table[_GLOBAL_KEY] = None
    return delivery
