"""One main-engine coroutine the script thread runs: a lifecycle call or a
deferred handler, with where it stands (started, told to stop, when it wakes);
and ``start_poll``, which starts a poll.

Owned by the script's ``ScriptLifecycle`` (``moonbus.host.lifecycle``) and
touched only on the script thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moonbus.bus.cascade import CascadeLink
from moonbus.errors import ClosedError, ScriptError

if TYPE_CHECKING:
    from moonbus.host.engine_side import ScriptEngine

__all__ = ["LifecycleTask", "start_poll"]


class LifecycleTask:
    """A suspended or runnable Lua coroutine of the main engine; ``cause``:
    the cascade of the event a deferred handler handles (its emits count there)."""

    __slots__ = ("args", "cause", "coroutine", "kind", "started", "told", "wake_at")

    def __init__(self, kind: str, coroutine: Any, args: tuple[Any, ...],
                 cause: CascadeLink | None = None) -> None:
        self.kind = kind
        self.coroutine = coroutine
        self.args = args
        self.cause = cause
        self.wake_at = 0.0
        self.started = False
        self.told = False  # resumed with the stop token: "script stopped" was raised in it


def start_poll(main: ScriptEngine, limit: float | None, delay: Callable[[Any, str], float]
               ) -> tuple[LifecycleTask | None, str, Any]:
    """Look up ``poll`` and run it up to its end or first ``sleep``, in one Lua
    call (``LuaEngine.start_task``; 10,000 scripts polling once a second
    start a poll every 100 µs, and each Lua call is a GIL hand-off).

    ``(None, "none", None)`` when the chunk defines no ``poll`` (now);
    ``(task, "sleep", seconds)`` when it sleeps (the task to step on);
    ``(None, "done", results)`` or ``(None, "error", exc)`` when it ended in
    this call: no task is made for the poll that simply returns, the common
    case, which is run thousands of times a second. A failing lookup (a
    hostile ``__index``) is a poll error. ``delay`` checks a sleep's delay
    (``ScriptLifecycle._delay``: NaN raises ``ScriptError``).
    """
    # Found as ScriptEngine.lifecycle_function finds it: a method of the table
    # the chunk returned (called with it as self), else a global function.
    table = main.returned_table
    engine = main.engine
    try:
        task_id, outcome, value = engine.start_task(
            main.env if table is None else table, "poll", table is not None, limit=limit)
    except (ScriptError, ClosedError) as exc:
        # Returned without its traceback: its frames hold the env table, and the
        # caller's frame holds the error (a cycle that kept the state alive).
        return None, "error", exc.with_traceback(None)
    if outcome != "sleep" or task_id is None:
        return None, outcome, value
    try:
        seconds = delay(value, "sleep")
    except ScriptError as exc:  # NaN: the poll failed, its task is dropped (as _step)
        if not engine.closed:
            engine.drop_task(task_id)
        return None, "error", exc.with_traceback(None)
    task = LifecycleTask("poll", task_id, ())
    task.started = True
    return task, outcome, seconds
