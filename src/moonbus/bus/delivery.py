"""Delivery: handing committed events to their handlers, and the cascade links.

``BusDelivery`` is the part of ``Bus`` (``bus.py``) that runs handlers: the
drain loop over ``_pending`` (``_drain_pending``, which the C emit core in
``core.py`` also calls), the general case for ``once`` and async
subscriptions, counting and logging handlers that raised, and the cascade
link of the event being delivered (``current_cause``; the limits themselves
are ``cascade.py``). It is a base class, not a separate object, so the emit
path reaches these as plain methods of the bus: no extra call per event.

Threads: the drain runs on the delivering thread under ``_emit_lock`` with
``core.draining`` set; ``_current``/``_root_link`` belong to it. Async
handlers are scheduled on their subscription's loop (``call_soon_threadsafe``)
and their failures counted there. ``release_cascades`` is called by the
deferred-delivery thread and only tries the lock. The attributes are set by
``Bus.__init__``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Coroutine
from operator import attrgetter
from typing import Any

from moonbus.bus.cascade import CascadeLink, CascadeTracker
from moonbus.bus.event import Event
from moonbus.bus.registry import BusRegistry
from moonbus.bus.subscription import Handler, Route, Subscription

__all__ = ["BusDelivery"]

_seq_of = attrgetter("seq")


class BusDelivery(BusRegistry):
    """Runs the handlers of committed events in seq order, breadth-first."""

    # Set by Bus.__init__ (annotations only: no class attributes).
    _emit_lock: threading.RLock
    _pending: deque[Event]
    _logger: logging.Logger
    _handler_errors: int
    cascade: CascadeTracker
    _links: dict[int, CascadeLink]
    _current: CascadeLink | None
    _root_link: CascadeLink | None

    # ------------------------------------------------------------- cascades
    def _caused_link(self, cause: int | CascadeLink | None) -> CascadeLink:
        """The cascade link of an event about to be committed by a handler
        (under ``_emit_lock``): caused by the event this thread delivers, or
        by ``cause``. Raises ``CascadeError`` past a limit."""
        if self._core.draining:
            parent = self.current_cause()
        elif isinstance(cause, tuple):
            parent = cause
        else:
            assert cause is not None
            parent = self.cascade.link(cause)
        return self.cascade.child(parent)

    def current_cause(self) -> CascadeLink:
        """The cascade link of the event being delivered (delivering thread,
        inside a handler): what a handler that runs later passes as ``cause``."""
        current = self._current
        if current is None:
            current = self._root_link
            if current is None:
                current = self.cascade.root()
                if self._core.draining:  # kept for the rest of this event's delivery
                    self._root_link = current
                    self._core.linked = True  # the drain must end in bus.py (resets it)
        return current

    def release_cascades(self, next_seq: int | None) -> None:
        """Deferred delivery's progress: every handler of the events before
        ``next_seq`` (None: of every event delivered so far) has run, so their
        cascade links can go (the event thread, after each batch). Skipped
        when another thread is delivering: the next batch releases them."""
        tracker = self.cascade
        if not tracker.links:
            return
        lock = self._emit_lock
        if not lock.acquire(blocking=False):
            return
        try:
            core = self._core
            if core.draining:
                return  # an event on its way: its remaining pushes need its link
            tracker.release_through(core.seq if next_seq is None else next_seq - 1)
        finally:
            lock.release()

    def _drain_pending(self, first: Event | None) -> None:
        """Deliver the queued events in seq order, ``first`` (if given) among
        them, and those that handlers emit meanwhile (delivering thread, under
        ``_emit_lock``, draining). Events can be queued already when a drain
        was interrupted or a ``wait_for`` predicate emitted."""
        pending = self._pending
        if first is not None:
            if pending:
                queued = sorted((*pending, first), key=_seq_of)
                pending.clear()
                pending.extend(queued)
            else:
                pending.append(first)
        core = self._core
        routes = self._routes
        cascade = self.cascade
        links = self._links
        try:
            while pending:
                current = pending.popleft()
                # the link of the event now delivered (None: a root of its own)
                self._current = links.get(current.seq) if links else None
                self._root_link = None
                try:
                    route = routes[current.type]
                except KeyError:
                    route = self._route(current.type)
                if not route.plain:
                    self._dispatch(route, current)
                    continue
                core.in_flight = route
                handlers = route.handlers
                core.delivered += len(handlers)
                for handler in handlers:
                    try:
                        handler(current)
                    except Exception as exc:
                        self._plain_handler_failed(route, handler, current, exc)
        finally:
            self._current = None
            self._root_link = None
            core.linked = False
            if links and not cascade.held:
                links.clear()  # every handler has run: no link is needed any more

    def _dispatch(self, route: Route, event: Event) -> None:
        """The general case: a route with ``once`` or async subscriptions."""
        for sub in route.subs:
            if not sub.active:
                continue
            if sub.once and not self._remove(sub):
                continue
            self._core.delivered += 1
            if sub.is_async:
                self._schedule(sub, event)
                continue
            try:
                sub.handler(event)
            except Exception as exc:
                self._handler_failed(sub, event, exc)

    def _handler_failed(self, sub: Subscription, event: Event, exc: BaseException) -> None:
        """Count and log a sync handler that raised ``exc`` (with its traceback)."""
        sub.errors += 1
        self._handler_errors += 1
        self._logger.error(
            "handler %r for %r failed on event seq=%d", sub.handler, sub.pattern, event.seq,
            exc_info=exc,
        )

    def _plain_handler_failed(
        self, route: Route, handler: Handler, event: Event, exc: BaseException
    ) -> None:
        """A handler of a plain route raised ``exc`` (also called by the C fast path)."""
        self._handler_failed(route.owner(handler), event, exc)

    def _schedule(self, sub: Subscription, event: Event) -> None:
        loop = sub.loop
        assert loop is not None

        def start() -> None:
            coro: Coroutine[Any, Any, Any] = sub.handler(event)
            task = loop.create_task(coro)
            task.add_done_callback(lambda t: self._async_done(sub, event, t))

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # loop closed
            sub.errors += 1
            self._handler_errors += 1
            self._logger.error("async handler %r dropped event seq=%d: loop is closed",
                               sub.handler, event.seq)

    def _async_done(self, sub: Subscription, event: Event, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            sub.errors += 1
            self._handler_errors += 1
            self._logger.error("async handler %r for %r failed on event seq=%d",
                               sub.handler, sub.pattern, event.seq, exc_info=exc)
