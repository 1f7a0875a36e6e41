"""The ``wait_for`` waiters of one bus.

A waiter is a future on some event loop plus a pattern and an optional
predicate. The bus registers it (any thread), offers it every committed event
(the committing thread, which holds the bus's emit lock, so events arrive one
at a time in ``seq`` order) and fails all of them when it closes. A waiter is
bound to the first matching event; its future is settled on its own loop with
``call_soon_threadsafe``.

The list is guarded by a lock the bus passes in (its registry lock). It is
never held while a predicate runs, so a predicate may use the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from moonbus.bus.event import Event
from moonbus.bus.patterns import matches

__all__ = ["Waiter", "Waiters"]


class Waiter:
    """One pending ``wait_for``."""

    __slots__ = ("future", "loop", "pattern", "where")

    def __init__(
        self,
        pattern: str,
        where: Callable[[Event], bool] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.pattern = pattern
        self.where = where
        self.loop = loop
        self.future: asyncio.Future[Event] = loop.create_future()

    def settle(self, outcome: Event | BaseException) -> None:
        """Resolve the future with ``outcome`` on its own loop (any thread)."""
        future = self.future

        def settle_on_loop() -> None:
            if future.done():  # timed out or cancelled meanwhile
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(settle_on_loop)


class Waiters:
    """The waiters of one bus, guarded by ``lock``.

    ``any`` is False when there is no waiter: a plain attribute (no method
    call), read without the lock by ``emit`` to skip ``offer`` cheaply.
    """

    __slots__ = ("_lock", "_waiters", "any")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._waiters: list[Waiter] = []
        self.any = False

    def add(self, waiter: Waiter) -> None:
        """Register a waiter. The caller holds the lock (to check "closed" atomically)."""
        self._waiters.append(waiter)
        self.any = True

    def discard(self, waiter: Waiter) -> None:
        """Forget a waiter that finished or gave up (any thread)."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            self.any = bool(self._waiters)

    def offer(self, event: Event) -> None:
        """Bind every waiting waiter that matches ``event`` (committing thread only).

        A predicate that raises settles its waiter with that exception.
        """
        with self._lock:
            waiters = list(self._waiters)
        finished: list[Waiter] = []
        for waiter in waiters:
            if waiter.future.done():
                finished.append(waiter)
                continue
            if not matches(waiter.pattern, event.type):
                continue
            try:
                hit = waiter.where is None or bool(waiter.where(event))
            except Exception as exc:
                waiter.settle(exc)
                finished.append(waiter)
                continue
            if hit:
                waiter.settle(event)
                finished.append(waiter)
        if finished:
            with self._lock:
                self._waiters = [w for w in self._waiters if w not in finished]
                self.any = bool(self._waiters)

    def take_all(self) -> list[Waiter]:
        """Remove and return every waiter. The caller holds the lock."""
        waiters, self._waiters = self._waiters, []
        self.any = False
        return waiters
