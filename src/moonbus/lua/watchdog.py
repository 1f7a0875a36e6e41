"""One thread that aborts Lua calls which run past their deadline.

Why a watchdog instead of a count hook: a per-instruction ``debug.sethook``
count hook roughly doubles the run time of pure-Lua code. Lua documents
``lua_sethook`` as safe to call asynchronously, so the watchdog does nothing
to a running call until its deadline passes and only then installs a count
hook (count 1) that raises on the next instruction, in every Lua thread of the
call (see ``LuaEngine.abort``). A call that finishes in time pays two dict
operations and a clock read.

Threads: ``arm``/``disarm`` are called by whichever thread runs the engine;
the watchdog's own thread only reads the armed table and calls
``Abortable.abort``. While nothing is armed the thread sleeps on an event, so
an idle runtime costs nothing. Precision is ``period`` (default 2 ms).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Abortable", "Watchdog"]


class Abortable(Protocol):
    """What the watchdog can abort: an engine in the middle of a call."""

    def abort(self, token: int, reason: str) -> bool: ...


class Watchdog:
    """Fires ``abort(token, "timeout")`` on armed calls whose deadline passed."""

    def __init__(
        self,
        *,
        period: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
        name: str = "moonbus-watchdog",
    ) -> None:
        self._period = period
        self._clock = clock
        self._armed: dict[Abortable, tuple[float, int]] = {}
        self._wake = threading.Event()
        self._idle = False  # True while the thread waits for something to be armed
        self._stop = False
        self._fired = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def armed(self) -> dict[Abortable, tuple[float, int]]:
        """The armed table itself, for hot paths that arm inline (see ``LuaEngine``):
        ``armed[target] = (deadline, token)`` then ``if watchdog.idle: watchdog.wake()``."""
        return self._armed

    @property
    def idle(self) -> bool:
        """True while the watchdog thread sleeps until something is armed."""
        return self._idle

    def wake(self) -> None:
        """Wake the thread after arming inline."""
        self._wake.set()

    def arm(self, target: Abortable, deadline: float, token: int) -> None:
        """Watch ``target``'s call ``token`` until ``disarm``; abort it after ``deadline``."""
        self._armed[target] = (deadline, token)
        if self._idle:  # cheaper than Event.is_set() on every call
            self._wake.set()

    def disarm(self, target: Abortable) -> None:
        """Stop watching ``target`` (its call ended)."""
        self._armed.pop(target, None)

    @property
    def fired(self) -> int:
        """How many calls the watchdog aborted."""
        return self._fired

    def _run(self) -> None:
        while not self._stop:
            # Order matters: publish "idle" before the last look at _armed, so an
            # arm() racing with it either is seen here or sees _idle and wakes us.
            self._idle = True
            self._wake.clear()
            if not self._armed:
                self._wake.wait()
                self._idle = False
                continue
            self._idle = False
            time.sleep(self._period)
            now = self._clock()
            for target, (deadline, token) in list(self._armed.items()):
                if now >= deadline and target.abort(token, "timeout"):
                    self._fired += 1

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
