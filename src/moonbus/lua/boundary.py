"""Python functions that Lua calls: errors cross back without Python frames.

Why: lupa ties every Lua value it wraps for Python (``_LuaTable``,
``_LuaFunction``) to the ``lua_State`` it was made on, and for the arguments
of a Python function called from a coroutine (a script's ``poll``,
``on_start``, deferred handlers) that state is the *coroutine*. If such a
wrapper outlives the coroutine, freeing it later touches freed memory
(``luaL_unref`` on a dead thread): a segfault at the next garbage collection.

An exception raised by a host function keeps the function's frame alive
through its traceback (and the callers' frames, through ``f_back``), with its
Lua arguments; Lua keeps the exception as the error value, redis-py and our
own batcher keep reference cycles through it, so it can be freed long after
the coroutine is gone. That is how a failed ``events.emit`` (a Redis event
store that went away) crashed the process at exit.

``detached`` wraps a function that Lua may call: an exception leaving it
has no traceback (nor have its ``__cause__``/``__context__`` chain), and the
wrapper drops its own arguments before raising, so the error keeps no Lua
value alive. Lua only ever shows the error's message (see SPEC §4b, "nothing
of Python shows"), so nothing a script sees changes.

Given ``timed`` (``DeferredDelivery.host_calls``: an event engine with
deferred delivery), the wrapper also calls ``enter()`` once the call has the
GIL and ``leave()`` when it returns or raises: the event thread counts that
wall time as delivery cost, so that pacing does not make a host wait for
handlers blocked in host calls (``moonbus.host.deferred``).

Threads: the wrapper holds no state; it runs on whichever thread runs the engine.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from moonbus.errors import MoonbusError

__all__ = ["HostCalls", "detached", "without_frames"]

# (enter, leave): called around a host call (see the module docstring).
HostCalls = tuple[Callable[[], None], Callable[[], None]]


# Errors a host function raises on purpose for the script to read; anything
# else is a host bug, whose traceback the host's log still needs (as text).
_EXPECTED = (MoonbusError, TypeError, ValueError, LookupError, ArithmeticError, MemoryError)


def without_frames(exc: BaseException) -> BaseException:
    """Drop the tracebacks of ``exc`` and of every exception chained to it
    (cause and context), in place; returns ``exc``. A host bug (not one of
    the errors raised for scripts) keeps its traceback as text, in a note, so
    the host's log of it still says where it happened."""
    if exc.__traceback__ is not None and not isinstance(exc, _EXPECTED):
        lines = traceback.format_tb(exc.__traceback__)
        exc.add_note("host traceback (frames dropped at the Lua boundary):\n" + "".join(lines))
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        item.__traceback__ = None
        todo.append(item.__cause__)
        todo.append(item.__context__)
    return exc


def detached(func: Callable[..., Any], timed: HostCalls | None = None) -> Callable[..., Any]:
    """``func`` for Lua to call: its errors carry no Python frames, and with
    ``timed`` its wall time is reported (see the module docstring)."""

    def call(*args: Any) -> Any:
        try:
            return func(*args)
        except BaseException as exc:  # re-raised below, detached
            error = exc
        args = ()  # the Lua values must not stay alive in this frame either
        try:
            raise without_frames(error)
        finally:
            del error  # no cycle frame -> error -> traceback -> frame

    if timed is not None:  # the same, between enter() and leave()
        enter, leave = timed

        def timed_call(*args: Any) -> Any:
            enter()
            try:
                return func(*args)
            except BaseException as exc:  # re-raised below, detached
                error = exc
            finally:
                leave()
            args = ()
            try:
                raise without_frames(error)
            finally:
                del error

        timed_call.__name__ = getattr(func, "__name__", "call")
        timed_call.__doc__ = func.__doc__
        return timed_call

    call.__name__ = getattr(func, "__name__", "call")
    call.__doc__ = func.__doc__
    return call
