"""The event bus: facts in, one global order out.

Ordering and threads
--------------------
``emit`` may be called from any thread. Commit is one short critical section
(``_commit_lock``): assign the next ``seq``, build the frozen ``Event``, append
it to the durable store (if any) and to the bounded in-memory log, and put it
on the *pending* queue. Delivery is then done by exactly one thread at a time,
the holder of ``_deliver_lock``, which pops pending events in ``seq`` order and
runs every matching handler outside any lock. So every subscriber sees events
in ``seq`` order, whatever thread emitted them.

A thread that emits while another thread is delivering blocks on
``_deliver_lock``; by the time it gets the lock its event has been delivered by
the other thread, so ``emit`` still returns only after its sync handlers ran.
A handler that emits (on the delivering thread) only commits: the new event is
delivered after the current one has reached all its handlers (breadth-first),
and that nested ``emit`` returns before its handlers have run — the one
documented exception to "handlers have run when emit returns".

Async handlers (coroutine functions) are scheduled on the event loop that was
running when they subscribed (or the ``loop=`` given), never awaited by
``emit``. ``wait_for`` waiters are bound to the first matching event at commit
time and resolved on their loop.

A handler that raises is logged with its traceback and counted; the other
handlers still run and the event stays committed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moonbus.bus.event import Event
from moonbus.bus.patterns import check_pattern, check_type_name, matches
from moonbus.errors import BusError, ClosedError

if TYPE_CHECKING:
    from moonbus.store.base import EventStore

__all__ = ["Bus", "BusStatistics", "Subscription"]

Handler = Callable[[Event], Any]
DEFAULT_LOG_SIZE = 10_000


class Subscription:
    """A handle to one subscription. Call it, or ``cancel()`` it, to unsubscribe."""

    __slots__ = ("_bus", "active", "calls", "errors", "handler", "is_async", "loop", "once",
                 "owner", "pattern")

    def __init__(
        self,
        bus: Bus,
        pattern: str,
        handler: Handler,
        *,
        once: bool,
        loop: asyncio.AbstractEventLoop | None,
        owner: str | None,
    ) -> None:
        self._bus = bus
        self.pattern = pattern
        self.handler = handler
        self.once = once
        self.loop = loop
        self.is_async = loop is not None
        self.owner = owner
        self.active = True
        self.calls = 0
        self.errors = 0

    def cancel(self) -> bool:
        """Unsubscribe. Returns False when it was already inactive."""
        return self._bus._remove(self)

    def __call__(self) -> bool:
        return self.cancel()

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        return f"<Subscription {self.pattern!r} {getattr(self.handler, '__qualname__', self.handler)!r} {state}>"


@dataclass(frozen=True)
class BusStatistics:
    """Counters of one bus, taken atomically enough for monitoring."""

    last_seq: int
    emitted: int
    delivered: int
    handler_errors: int
    subscriptions: int
    log_size: int
    pending: int


class _Waiter:
    __slots__ = ("future", "loop", "pattern", "where")

    def __init__(
        self,
        pattern: str,
        where: Callable[[Event], bool] | None,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Event],
    ) -> None:
        self.pattern = pattern
        self.where = where
        self.loop = loop
        self.future = future


class Bus:
    """An ordered, in-process event bus with a bounded log.

    ``store`` (optional) receives every committed event inside the commit
    section; if the store fails, ``emit`` raises and the event is not
    committed (no gap in ``seq``). A bus reopened over a durable store
    continues its numbering. A store that assigns seqs itself (``assigns_seq``,
    the Redis store shared by several processes) numbers every event instead
    of the bus: its seqs are the deployment's global order.
    """

    def __init__(
        self,
        *,
        log_size: int = DEFAULT_LOG_SIZE,
        store: EventStore | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        default_source: str = "host",
    ) -> None:
        if log_size < 1:
            raise BusError("log_size must be at least 1")
        self._store = store
        self._clock = clock
        self._logger = logger or logging.getLogger("moonbus.bus")
        self._default_source = default_source
        self._commit_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._delivering: int | None = None  # ident of the thread holding _deliver_lock
        self._seq = store.last_seq() if store is not None else 0
        self._log: deque[Event] = deque(maxlen=log_size)
        self._pending: deque[Event] = deque()
        self._subs: list[Subscription] = []
        self._by_type: dict[str, tuple[Subscription, ...]] = {}
        self._waiters: list[_Waiter] = []
        self._emitted = 0
        self._delivered = 0
        self._handler_errors = 0
        self._closed = False

    # ------------------------------------------------------------------ subscribe
    def on(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str | None = None,
    ) -> Any:
        """Subscribe ``handler`` to ``pattern`` (exact type, ``*`` or ``prefix*``).

        Returns a ``Subscription``; used as a decorator (``@bus.on("tick")``)
        it returns the handler unchanged. Coroutine functions are async
        handlers, scheduled on ``loop`` (default: the running loop).
        """
        if handler is None:
            def decorator(func: Handler) -> Handler:
                self.on(pattern, func, loop=loop, owner=owner)
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
        for sub in [s for s in self._subs if s.pattern == pattern and s.handler == handler]:
            removed += self._remove(sub)
        return removed

    def subscriptions(self) -> list[Subscription]:
        """Active subscriptions in registration order (a copy)."""
        with self._commit_lock:
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
        with self._commit_lock:
            self._check_open()
            self._subs.append(sub)
            self._by_type.clear()
        return sub

    def _remove(self, sub: Subscription) -> bool:
        with self._commit_lock:
            if not sub.active:
                return False
            sub.active = False
            self._subs.remove(sub)
            self._by_type.clear()
            return True

    def _handlers_for(self, event_type: str) -> tuple[Subscription, ...]:
        # Called by the delivering thread only; the cache is rebuilt under the
        # commit lock so a concurrent subscribe cannot interleave.
        subs = self._by_type.get(event_type)
        if subs is None:
            with self._commit_lock:
                subs = tuple(s for s in self._subs if matches(s.pattern, event_type))
                self._by_type[event_type] = subs
        return subs

    # ----------------------------------------------------------------------- emit
    def emit(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        tick: int | None = None,
    ) -> Event:
        """Commit one event and deliver it (see the module docstring for the rules)."""
        check_type_name(type)
        if data is not None and not isinstance(data, Mapping):
            raise BusError(f"event data must be a mapping, got {data.__class__.__name__}")
        store = self._store
        with self._commit_lock:
            self._check_open()
            if store is not None and store.assigns_seq:
                # The store numbers events (shared by several processes): it
                # appends and returns the event with its seq; raises: nothing committed.
                event = store.append_new(
                    type,
                    data,
                    tick=tick,
                    ts=int(self._clock() * 1000),
                    source=self._default_source if source is None else source,
                )
            else:
                event = Event.create(
                    type,
                    data,
                    seq=self._seq + 1,
                    tick=tick,
                    source=self._default_source if source is None else source,
                    ts=int(self._clock() * 1000),
                )
                if store is not None and store.settings.wants(type):
                    store.append(event)  # raises: nothing committed, no seq consumed
            self._seq = event.seq
            self._log.append(event)
            self._pending.append(event)
            self._emitted += 1
            if self._waiters:
                self._resolve_waiters(event)
        self._drain()
        return event

    def _drain(self) -> None:
        me = threading.get_ident()
        if self._delivering == me:
            return  # nested emit from a handler: the outer loop delivers it next
        with self._deliver_lock:
            self._delivering = me
            try:
                while True:
                    with self._commit_lock:
                        if not self._pending:
                            return
                        event = self._pending.popleft()
                    self._dispatch(event)
            finally:
                self._delivering = None

    def _dispatch(self, event: Event) -> None:
        for sub in self._handlers_for(event.type):
            if not sub.active:
                continue
            if sub.once and not self._remove(sub):
                continue
            sub.calls += 1
            self._delivered += 1
            if sub.is_async:
                self._schedule(sub, event)
                continue
            try:
                sub.handler(event)
            except Exception:
                sub.errors += 1
                self._handler_errors += 1
                self._logger.exception(
                    "handler %r for %r failed on event seq=%d", sub.handler, sub.pattern, event.seq
                )

    def _schedule(self, sub: Subscription, event: Event) -> None:
        loop = sub.loop
        assert loop is not None

        def start() -> None:
            coro: Awaitable[Any] = sub.handler(event)
            task = loop.create_task(coro)  # type: ignore[arg-type]
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Event] = loop.create_future()
        waiter = _Waiter(pattern, where, loop, future)
        with self._commit_lock:
            self._check_open()
            self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            with self._commit_lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _resolve_waiters(self, event: Event) -> None:
        # Under the commit lock: bind each waiter to the first matching event.
        keep: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if matches(waiter.pattern, event.type):
                try:
                    hit = waiter.where is None or bool(waiter.where(event))
                except Exception as exc:
                    self._set_waiter(waiter, exc)
                    continue
                if hit:
                    self._set_waiter(waiter, event)
                    continue
            keep.append(waiter)
        self._waiters = keep

    @staticmethod
    def _set_waiter(waiter: _Waiter, outcome: Event | BaseException) -> None:
        def settle() -> None:
            if waiter.future.done():
                return
            if isinstance(outcome, BaseException):
                waiter.future.set_exception(outcome)
            else:
                waiter.future.set_result(outcome)

        try:
            waiter.loop.call_soon_threadsafe(settle)
        except RuntimeError:
            pass  # the waiter's loop is closed; nobody is waiting any more

    # ----------------------------------------------------------------------- log
    def log(
        self,
        limit: int | None = None,
        after_seq: int | None = None,
        types: Sequence[str] | str | None = None,
    ) -> list[Event]:
        """Events from the in-memory log, oldest first.

        ``after_seq`` pages forward (``limit`` then keeps the first events after
        it); without ``after_seq``, ``limit`` keeps the newest events.
        """
        if isinstance(types, str):
            types = (types,)
        wanted = None if types is None else frozenset(types)
        with self._commit_lock:
            events = list(self._log)
        if after_seq is not None:
            events = [e for e in events if e.seq > after_seq]
        if wanted is not None:
            events = [e for e in events if e.type in wanted]
        if limit is not None:
            if limit < 0:
                raise BusError("limit must not be negative")
            events = events[:limit] if after_seq is not None else events[-limit:] if limit else []
        return events

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest committed event (0 before any)."""
        return self._seq

    def statistics(self) -> BusStatistics:
        """Counters for monitoring and the admin ``listeners`` command."""
        with self._commit_lock:
            return BusStatistics(
                last_seq=self._seq,
                emitted=self._emitted,
                delivered=self._delivered,
                handler_errors=self._handler_errors,
                subscriptions=len(self._subs),
                log_size=len(self._log),
                pending=len(self._pending),
            )

    # --------------------------------------------------------------------- close
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the bus is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Refuse further emits and subscriptions; pending waiters get ``ClosedError``."""
        with self._commit_lock:
            if self._closed:
                return
            self._closed = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._set_waiter(waiter, ClosedError("the bus is closed"))

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
