"""Who wants events: the bus's subscriptions, its per-type routes and its waiters.

``BusRegistry`` is the part of ``Bus`` (``bus.py``) that registers and
cancels subscriptions (``on``/``once``/``off``), builds and caches the handler
list of each event type (``Route``, ``subscription.py``), remembers validated
type names and registers ``wait_for`` waiters (``waiters.py``). It is a base
class, not a separate object, so the delivering thread reaches ``_route`` and
``_remove`` as plain methods of the bus: no extra call on the emit path.

Threads: everything here runs under ``_registry_lock`` (short, never held
while a handler runs, taken after ``_emit_lock`` when both are needed), from
any thread. The delivering thread reads ``_routes`` without the lock; the
lock only guards building and dropping them (``clear()`` keeps the dict, so
its references see the change). The attributes are set by ``Bus.__init__``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import TypeVar, overload

from moonbus.bus.core import EmitState
from moonbus.bus.event import Event
from moonbus.bus.patterns import check_pattern, check_type_name, matches
from moonbus.bus.subscription import Handler, Route, Subscription
from moonbus.bus.waiters import Waiter, Waiters
from moonbus.errors import BusError, ClosedError

__all__ = ["CACHE_LIMIT", "BusRegistry"]

CACHE_LIMIT = 4_096  # distinct type names remembered (validated names, routes)
_H = TypeVar("_H", bound=Handler)


class BusRegistry:
    """Subscriptions, routes, known type names and waiters of one ``Bus``."""

    # Set by Bus.__init__ (annotations only: no class attributes).
    _registry_lock: threading.Lock
    _core: EmitState
    _subs: list[Subscription]
    _routes: dict[str, Route]
    _waiters: Waiters
    _type_names: set[str]

    # ------------------------------------------------------------------ subscribe
    @overload
    def on(
        self,
        pattern: str,
        handler: None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str | None = None,
    ) -> Callable[[_H], _H]: ...

    @overload
    def on(
        self,
        pattern: str,
        handler: Handler,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str | None = None,
    ) -> Subscription: ...

    def on(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str | None = None,
    ) -> Subscription | Callable[[_H], _H]:
        """Subscribe ``handler`` to ``pattern`` (exact type, ``*`` or ``prefix*``).

        Returns a ``Subscription``; used as a decorator (``@bus.on("tick")``)
        it returns the handler unchanged. Coroutine functions are async
        handlers, scheduled on ``loop`` (default: the running loop).
        """
        if handler is None:
            def decorator(func: _H) -> _H:
                self._add(pattern, func, once=False, loop=loop, owner=owner)
                return func
            return decorator
        return self._add(pattern, handler, once=False, loop=loop, owner=owner)

    def once(
        self,
        pattern: str,
        handler: Handler,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str | None = None,
    ) -> Subscription:
        """Subscribe for the next matching event only."""
        return self._add(pattern, handler, once=True, loop=loop, owner=owner)

    def off(self, pattern: str, handler: Handler) -> int:
        """Remove every subscription of ``handler`` to ``pattern``; returns how many."""
        removed = 0
        for sub in [s for s in self.subscriptions() if s.pattern == pattern
                    and s.handler == handler]:
            removed += self._remove(sub)
        return removed

    def subscriptions(self) -> list[Subscription]:
        """Active subscriptions in registration order (a copy)."""
        with self._registry_lock:
            return list(self._subs)

    def _add(
        self,
        pattern: str,
        handler: Handler,
        *,
        once: bool,
        loop: asyncio.AbstractEventLoop | None,
        owner: str | None,
    ) -> Subscription:
        check_pattern(pattern)
        if not callable(handler):
            raise BusError(f"handler for {pattern!r} is not callable: {handler!r}")
        if inspect.iscoroutinefunction(handler):
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    raise BusError(
                        f"async handler {handler!r} needs a running event loop; "
                        "subscribe from inside the loop or pass loop="
                    ) from None
        else:
            loop = None
        sub = Subscription(self, pattern, handler, once=once, loop=loop, owner=owner)
        with self._registry_lock:
            self._check_open()
            self._subs.append(sub)
            self._drop_routes()
        return sub

    def _remove(self, sub: Subscription) -> bool:
        with self._registry_lock:
            if not sub.active:
                return False
            sub.active = False
            self._subs.remove(sub)
            in_flight = self._core.in_flight
            if in_flight is not None:
                in_flight.skip(sub, self._skipped)
            self._drop_routes()
            return True

    def _skipped(self, event: Event) -> None:
        # Stands in for a handler cancelled while its route was being delivered.
        self._core.delivered -= 1

    def _drop_routes(self) -> None:
        # Under the registry lock. clear() keeps the dict objects, so the
        # delivering thread's references see the change.
        self._routes.clear()

    def _route(self, event_type: str) -> Route:
        """Build and cache the route for ``event_type`` (delivering thread, cache miss)."""
        with self._registry_lock:
            if len(self._routes) >= CACHE_LIMIT:
                self._drop_routes()
            route = Route(tuple(s for s in self._subs if matches(s.pattern, event_type)))
            self._routes[event_type] = route
        return route

    def _learn_type(self, name: object) -> None:
        """Validate a type name not seen before (raises ``BusError``) and remember it."""
        check_type_name(name)
        assert isinstance(name, str)
        if len(self._type_names) < CACHE_LIMIT:
            self._type_names.add(name)

    def _check_open(self) -> None:
        if self._core.closed:
            raise ClosedError("the bus is closed")

    # ------------------------------------------------------------------- waiting
    async def wait_for(
        self,
        pattern: str,
        *,
        timeout: float | None = None,
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Wait for the next event matching ``pattern`` (and ``where``), committed
        after this call started. Raises ``TimeoutError`` after ``timeout`` seconds."""
        check_pattern(pattern)
        waiter = Waiter(pattern, where, asyncio.get_running_loop())
        with self._registry_lock:
            self._check_open()
            self._waiters.add(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        finally:
            self._waiters.discard(waiter)
