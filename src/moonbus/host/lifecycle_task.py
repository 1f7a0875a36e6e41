"""One main-engine coroutine the script thread runs: a lifecycle call or a
deferred handler, with where it stands (started, told to stop, when it wakes).

Owned by the script's ``ScriptLifecycle`` (``moonbus.host.lifecycle``) and
touched only on the script thread.
"""

from __future__ import annotations

from typing import Any

from moonbus.bus.cascade import CascadeLink

__all__ = ["LifecycleTask"]


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
