"""The event bus: facts in, one global order out.

Ordering and threads
--------------------
``emit`` may be called from any thread. It holds ``_emit_lock`` (an ``RLock``)
for the whole call: commit (assign the next ``seq``, build the frozen
``Event``, append it to the durable store if any and to the bounded in-memory
log, resolve ``wait_for`` waiters) and then delivery, which runs every matching
handler in ``seq`` order. Only one thread commits and delivers at a time, so
every subscriber sees events in ``seq`` order, whatever thread emitted them.

A thread that emits while another thread is delivering blocks on
``_emit_lock`` until that delivery is over, then commits and delivers its own
event, so ``emit`` returns only after its sync handlers ran. A handler that
emits (on the delivering thread; the lock is re-entrant) only commits: the new
event is queued on ``_pending`` and delivered after the current one has reached
all its handlers (breadth-first), and that nested ``emit`` returns before its
handlers have run — the one documented exception to "handlers have run when
emit returns". Those nested events form the *cascade* of the top-level emit,
bounded in depth and count (``cascade.py``): past a limit, the nested emit
raises ``CascadeError`` in its handler and commits nothing, so a handler that
re-emits what it handles cannot keep the top-level ``emit`` from returning.

``_registry_lock`` guards subscriptions, the cached handler lists and the
waiters. It is short, never held while a handler runs, and taken after
``_emit_lock`` when both are needed (never the other way round), so
subscribing, cancelling and ``wait_for`` from any thread never wait for a
running handler. ``log()`` copies the log without a lock (see ``log``).

Async handlers (coroutine functions) are scheduled on the event loop that was
running when they subscribed (or the ``loop=`` given), never awaited by
``emit``. ``wait_for`` waiters (``waiters.py``) are bound to the first matching
event at commit time and resolved on their loop.

A handler that raises is logged with its traceback and counted; the other
handlers still run and the event stays committed.

Seqs from the store, events from other processes
------------------------------------------------
A store that assigns seqs itself (``assigns_seq``: Redis, shared by several
processes) numbers every event instead of the bus: ``emit`` freezes the data
and hands the event to ``ordered.OrderedPath``, which appends first and commits
in the store's seq order, and a store feed (``attach_remote``,
``deliver_remote``, ``drain``) adds the events other processes emit (see
``ordered.py``). Without such a store none of this runs: the path above is
unchanged.

Where the parts are
------------------
``Bus`` (here) owns construction, ``emit``, the in-memory log, statistics and
``close``; its base classes hold the rest, as methods of the same object so
that no call layer is added per event: ``registry.BusRegistry``
(subscriptions, routes, type names, waiters) and ``delivery.BusDelivery``
(the drain loop, handler failures, async handlers, cascade links).

Speed (``emit`` is the hot path; ``python -m moonbus.bench.bus`` measures it)
-----------------------------------------------------------------------------
* One lock round trip per emit; locks are taken with ``acquire``/``release``,
  which is cheaper than ``with`` on CPython 3.11.
* Validated type names are remembered in a bounded set: a name is checked once.
* ``data`` is frozen before the lock is taken; a ``dict`` of scalars is one
  shallow copy (``freeze_data``'s short path, inlined). ``Event`` is a named
  tuple, built with ``tuple.__new__``; the default clock is ``time.time_ns()``.
* Delivery needs no queue unless a handler emits: the emitting thread hands
  its own event straight to the handlers; ``_pending`` holds nested events.
* Handler lists are cached per event type (``Route``). For types whose
  handlers are all plain sync handlers, delivery is a loop over a list of
  callables; ``once`` and async subscriptions take the general path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType as _read_only
from typing import TYPE_CHECKING, Any

from moonbus.bus.cascade import (
    DEFAULT_MAX_CASCADE_DEPTH,
    DEFAULT_MAX_CASCADE_EVENTS,
    CascadeLimits,
    CascadeLink,
    CascadeSettings,
    CascadeTracker,
)
from moonbus.bus.core import EmitState, PyEmitState, make_emit_state
from moonbus.bus.delivery import BusDelivery
from moonbus.bus.emit_data import ValueObjectTest, freeze_emitted, is_value_object
from moonbus.bus.event import EMPTY_DATA, SCALAR_TYPES, Event
from moonbus.bus.ordered import OrderedPath
from moonbus.bus.records import BusStatistics, DispatchGate
from moonbus.bus.subscription import Route, Subscription
from moonbus.bus.waiters import Waiters
from moonbus.errors import BusError, ClosedError

if TYPE_CHECKING:
    from moonbus.store.base import EventStore

__all__ = ["Bus", "BusStatistics", "Subscription"]

DEFAULT_LOG_SIZE = 10_000
_typeof = type  # ``emit`` has a parameter named ``type``
_new_tuple = tuple.__new__
_time_ns = time.time_ns


class Bus(BusDelivery):
    """An ordered, in-process event bus with a bounded log.

    ``store`` (optional) receives every committed event inside the commit
    section; if the store fails, ``emit`` raises and the event is not
    committed (no gap in ``seq``). A bus over a store that already holds
    events continues numbering after the store's ``last_seq()``; a store that
    assigns seqs (``assigns_seq``) numbers the events itself, and
    ``reorder_timeout`` bounds how long an event waits for earlier seqs.
    ``clock`` returns wall-clock seconds (``ts`` is that in whole milliseconds).
    Events emitted by handlers form a cascade per top-level emit, bounded by
    ``max_cascade_depth`` and ``max_cascade_events`` (or ``cascade_limits``,
    read live): see ``moonbus.bus.cascade``.
    """

    def __init__(
        self,
        *,
        log_size: int = DEFAULT_LOG_SIZE,
        store: EventStore | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        default_source: str = "host",
        reorder_timeout: float = 5.0,
        gate: DispatchGate | None = None,
        native: bool = True,
        max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
        max_cascade_events: int = DEFAULT_MAX_CASCADE_EVENTS,
        cascade_limits: CascadeSettings | None = None,
        value_objects: ValueObjectTest = is_value_object,  # see bus.emit_data
    ) -> None:
        if log_size < 1:
            raise BusError("log_size must be at least 1")
        # Cascade limits and the links of caused events (moonbus.bus.cascade),
        # under _emit_lock. _current: the link of the event the draining thread
        # delivers (None: a root); _root_link: that root's, made when it first
        # causes an event (core.linked tells the C path to end the drain in
        # bus.py, which resets both).
        # cascade_limits (read live, e.g. the runtime's HostSettings) wins over
        # the two max_cascade_* arguments.
        self.cascade = CascadeTracker(cascade_limits or CascadeLimits(
            max_cascade_depth=max_cascade_depth, max_cascade_events=max_cascade_events))
        self._links = self.cascade.links  # the same dict, never rebound
        self._current: CascadeLink | None = None
        self._root_link: CascadeLink | None = None
        self._store, self._value_objects = store, value_objects
        self._gate = gate  # told when a drain starts and ends (see DispatchGate)
        # None means the default wall clock, read as time.time_ns() // 10**6.
        self._clock: Callable[[], float] | None = None if clock is time.time else clock
        self._logger = logger or logging.getLogger("moonbus.bus")
        self._default_source = default_source
        self._emit_lock = threading.RLock()
        self._registry_lock = threading.Lock()
        first_seq = store.last_seq() if store is not None else 0
        self._first_seq = first_seq
        # Under _emit_lock:
        self._log: deque[Event] = deque(maxlen=log_size)
        self._pending: deque[Event] = deque()
        # Under _registry_lock (routes are read without it by the delivering thread):
        self._subs: list[Subscription] = []
        self._routes: dict[str, Route] = {}
        self._waiters = Waiters(self._registry_lock)
        # Any thread (set.add is atomic; a lost race only means one more check):
        self._type_names: set[str] = set()
        self._handler_errors = 0
        numbered = store is not None and store.assigns_seq
        # The emit state (seq, closed, draining, in_flight, delivered), under
        # _emit_lock, and the C fast path over it when that is built (see
        # moonbus.bus.core); the general path below shares the same state.
        self._core: EmitState = make_emit_state(
            native=native and not numbered,
            event_type=Event,
            type_names=self._type_names,
            lock=self._emit_lock,
            clock=self._clock,
            store=store,
            log=self._log,
            pending=self._pending,
            gate=gate,
            waiters=self._waiters,
            routes=self._routes,
            default_source=default_source,
            empty_data=EMPTY_DATA,
            handler_failed=self._plain_handler_failed,
            drain_pending=self._drain_pending,
            general=self._emit_general,
            seq=first_seq,
        )
        if not isinstance(self._core, PyEmitState):
            # Calling the C core *is* emit: it takes the common case and hands
            # everything else, arguments as given, to the Python path below.
            self.emit = self._core  # type: ignore[method-assign, assignment]
        # Stores that number events: append first, commit in their order (ordered.py).
        self._ordered: OrderedPath | None = None
        if store is not None and numbered:
            self._ordered = OrderedPath(
                append_new=store.append_new, reorder_timeout=reorder_timeout,
                logger=self._logger, lock=self._emit_lock, core=self._core, log=self._log,
                pending=self._pending, waiters=self._waiters, gate=gate, clock=self._clock,
                cascade=self.cascade, caused_link=self._caused_link,
                drain_pending=self._drain_pending,
            )

    # ----------------------------------------------------------------------- emit
    def emit(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        tick: int | None = None,
        cause: int | CascadeLink | None = None,
    ) -> Event:
        """Commit one event and deliver it (see the module docstring for the rules).

        ``cause``: the seq (or ``CascadeLink``) of the event whose handler emits this one, when
        that handler does not run inside this bus's delivery (deferred delivery, a script's main
        engine). The event then counts against that event's cascade, as an emit from a handler
        run by the bus does without it; ``CascadeError`` when that passes a cascade limit
        (``moonbus.bus.cascade``), with nothing committed. This is the reference (pure-Python)
        path; a bus with the C core built (``moonbus.bus.core``) runs the common case in C.
        Then, for a top-level emit, the lock released: the pace hook, if set (``set_pace``).
        """
        try:
            known = type in self._type_names
        except TypeError:  # unhashable: certainly not a type name
            known = False
        if not known:
            self._learn_type(type)
        if data is None:
            frozen = EMPTY_DATA
        elif _typeof(data) is dict:
            # freeze_data's short path, inlined: the usual payload is a dict of
            # scalars under str keys, and a shallow copy freezes it completely.
            for key, value in data.items():
                if _typeof(key) is not str or _typeof(value) not in SCALAR_TYPES:
                    frozen = freeze_emitted(data, self._value_objects)
                    break
            else:
                frozen = _read_only(data.copy()) if data else EMPTY_DATA
        elif isinstance(data, Mapping):
            frozen = freeze_emitted(data, self._value_objects)
        else:
            raise BusError(f"event data must be a mapping, got {data.__class__.__name__}")
        if source is None:
            source = self._default_source
        if self._ordered is not None:
            return self._ordered.emit(type, frozen, source, tick, cause)

        core = self._core
        lock = self._emit_lock
        lock.acquire()
        try:
            if core.closed:  # ---- commit
                raise ClosedError("the bus is closed")
            link = None  # a handler's emit: its cascade link (CascadeError: nothing committed)
            if core.draining:
                link = self.cascade.child(self._current or self._root_link or self.current_cause())
            elif cause is not None:
                link = self._caused_link(cause)
            seq = core.seq + 1
            clock = self._clock
            ts = _time_ns() // 1_000_000 if clock is None else int(clock() * 1000)
            event: Event = _new_tuple(Event, (type, frozen, seq, tick, ts, source))
            store = self._store
            if store is not None and store.settings.wants(type):
                store.append(event)  # raises: nothing committed, no seq consumed
            core.seq = seq
            self._log.append(event)
            if link is not None:
                link[0].events += 1  # CascadeTracker.committed, inlined
                self._links[seq] = link
            # ---- deliver (waiters resolved once the event has its place: a `where` emit queues)
            pending = self._pending
            if core.draining:
                pending.append(event)  # nested emit: the running drain delivers it
                if self._waiters.any:
                    self._waiters.offer(event)
                return event
            core.draining = True
            gate = self._gate
            if gate is not None:
                gate.enter()
            try:
                if self._waiters.any:
                    self._waiters.offer(event)
                self._drain_pending(event)
            finally:
                core.draining = False
                core.in_flight = None  # do not keep cancelled handlers alive
                if gate is not None:
                    gate.exit()
        finally:
            lock.release()
        if core.pace is not None:
            core.pace()
        return event

    _emit_general = emit

    def set_pace(self, pace: Callable[[], None] | None) -> None:  # see bus.core
        self._core.pace = pace
    # ------------------------------------------ seqs assigned by the store (ordered.py)
    def attach_remote(self, after_seq: int) -> None:
        """A store feed will report every seq after ``after_seq`` (other processes'
        events through ``deliver_remote``). Call before the first emit."""
        self._ordered_path().attach(after_seq)

    def deliver_remote(
        self, events: Sequence[Event], *, upto: int, own: Mapping[int, Event]
    ) -> None:
        """From the store's feed thread: other processes' ``events`` (seq order),
        copies of this process's own events by seq, and the stream has been read
        through ``upto``. Gives them their place in the order; ``drain`` delivers."""
        self._ordered_path().remote(events, upto=upto, own=own)

    def drain(self) -> None:
        """Deliver every event that has its place in the order (the feed's
        delivery thread calls this after ``deliver_remote``)."""
        if self._ordered is not None:
            self._ordered.drain()

    def _ordered_path(self) -> OrderedPath:
        if self._ordered is None:
            raise BusError("events from other processes need a store that assigns seqs")
        return self._ordered

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
        if limit is not None and limit < 0:
            raise BusError("limit must not be negative")
        if isinstance(types, str):
            types = (types,)
        wanted = None if types is None else frozenset(types)
        events = self._log_copy()
        if after_seq is not None:
            events = [e for e in events if e.seq > after_seq]
        if wanted is not None:
            events = [e for e in events if e.type in wanted]
        if limit is not None:
            events = events[:limit] if after_seq is not None else events[-limit:] if limit else []
        return events

    def _log_copy(self) -> list[Event]:
        # Lock-free, so a reader never waits for a running handler. Copying a
        # deque runs in C and sees one consistent state, unless the copy lets
        # another thread run (a garbage-collector finalizer can): the deque then
        # raises RuntimeError and we copy again.
        while True:
            try:
                return list(self._log)
            except RuntimeError:
                continue

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest committed event (0 before any)."""
        return self._core.seq

    def emitting_here(self) -> bool:
        """True while the calling thread is inside ``emit`` (committing or
        delivering: a handler runs here). Such a thread holds the emit lock, so
        it must not wait for another thread that may need to emit (the script
        host's ``stop`` asks for the stop without waiting then)."""
        # RLock._is_owned is what threading.Condition uses for the same question.
        return bool(self._emit_lock._is_owned())  # type: ignore[attr-defined]

    def statistics(self) -> BusStatistics:
        """Counters for monitoring and the admin ``listeners`` command (no lock taken)."""
        core = self._core
        seq = core.seq
        return BusStatistics(
            last_seq=seq, emitted=seq - self._first_seq, delivered=core.delivered,
            handler_errors=self._handler_errors, subscriptions=len(self._subs),
            log_size=len(self._log), pending=len(self._pending),
            cascades_cut=self.cascade.cut, cascade_emits_refused=self.cascade.refused,
            c_emits_taken=core.taken, c_emits_handed_back=core.handed_back,
        )

    # --------------------------------------------------------------------- close
    @property
    def closed(self) -> bool:
        return self._core.closed

    def close(self) -> None:
        """Refuse further emits and subscriptions; pending waiters get ``ClosedError``.

        Waits for a delivery running on another thread to finish (called from
        a handler, it returns at once), so no event is committed after it.
        """
        with self._emit_lock, self._registry_lock:
            if self._core.closed:
                return
            self._core.closed = True
            waiters = self._waiters.take_all()
        for waiter in waiters:
            waiter.settle(ClosedError("the bus is closed"))

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
