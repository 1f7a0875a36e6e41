"""The bus over a store that numbers events: append first, commit in seq order.

A store that assigns seqs itself (``assigns_seq``: Redis, shared by several
processes) numbers every event instead of the bus. ``Bus.emit`` then hands
the frozen event to ``OrderedPath.emit``, which appends first, *outside* the
bus's emit lock (appends from several threads travel together in one round
trip), and hands the event to a ``Sequencer`` (the reorder point), which
commits events in seq order: an event whose earlier seqs are still on their
way waits for them (at most ``reorder_timeout`` seconds; then they are logged
and skipped). Committed events are moved into the bus's log and delivered
under its emit lock as usual (``Bus._drain_pending``). A store feed
(``Bus.attach_remote``, ``deliver_remote``, ``drain``) adds the events other
processes emit, in the same global order; a handler that emits does not wait
for its event's place (it is delivered later by the running drain or the
feed's delivery thread). Without such a store the bus makes no
``OrderedPath`` and none of this runs.

Why a module of its own: this path shares the bus's state (emit lock, emit
state, log, pending queue, waiters, gate, cascade links) but none of its hot
path; the bus hands it those objects, never rebinds them, and delegates to it.

Threads: ``emit`` from any thread (it takes the bus's emit lock to commit a
cascade link and to deliver); ``remote`` from the feed's reader thread;
``drain`` from the feed's delivery thread; ``attach`` once, before the first
emit. ``_drainer`` (the thread now delivering) is read and written under the
emit lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from moonbus.bus.cascade import CascadeLink, CascadeTracker
from moonbus.bus.core import EmitState
from moonbus.bus.event import Event
from moonbus.bus.records import DispatchGate
from moonbus.bus.sequencer import Sequencer
from moonbus.bus.waiters import Waiters
from moonbus.errors import ClosedError

__all__ = ["AppendNew", "OrderedPath"]

_time_ns = time.time_ns


class AppendNew(Protocol):
    """The store's ``append_new``: append one event, the store assigns its seq."""

    def __call__(
        self, event_type: str, data: Any = None, *, tick: int | None, ts: int, source: str
    ) -> Event: ...


class OrderedPath:
    """The store-numbered emit path and the remote-event feed of one ``Bus``."""

    def __init__(
        self,
        *,
        append_new: AppendNew,
        reorder_timeout: float,
        logger: logging.Logger,
        lock: threading.RLock,
        core: EmitState,
        log: deque[Event],
        pending: deque[Event],
        waiters: Waiters,
        gate: DispatchGate | None,
        clock: Callable[[], float] | None,
        cascade: CascadeTracker,
        caused_link: Callable[[int | CascadeLink | None], CascadeLink],
        drain_pending: Callable[[Event | None], None],
    ) -> None:
        self._append_new = append_new
        self.sequencer = Sequencer(timeout=reorder_timeout, logger=logger)
        self._emit_lock = lock
        self._core = core
        self._log = log
        self._pending = pending
        self._waiters = waiters
        self._gate = gate
        self._clock = clock  # None: the default wall clock, read as time.time_ns()
        self._cascade = cascade
        self._caused_link = caused_link
        self._drain_pending = drain_pending
        self._drainer: int | None = None  # under the emit lock

    def emit(
        self,
        type: str,
        data: Mapping[str, Any],
        source: str,
        tick: int | None,
        cause: int | CascadeLink | None,
    ) -> Event:
        """``Bus.emit`` over a store that assigns seqs (see the module docstring)."""
        if self._core.closed:
            raise ClosedError("the bus is closed")
        ordered = self.sequencer
        nested = self._drainer == threading.get_ident()
        link = None
        if nested or cause is not None:
            with self._emit_lock:  # held already when nested (re-entrant)
                link = self._caused_link(cause)  # raises CascadeError: nothing appended
        clock = self._clock
        ts = _time_ns() // 1_000_000 if clock is None else int(clock() * 1000)
        ticket = ordered.begin()
        try:
            event = self._append_new(type, data, tick=tick, ts=ts, source=source)
        except BaseException:
            ordered.failed(ticket)  # raises: nothing committed
            raise
        if link is not None:
            with self._emit_lock:
                self._cascade.committed(event.seq, link)
        ordered.arrived(ticket, event, wait=not nested)
        self.drain()
        return event

    def drain(self) -> None:
        """Move the events the sequencer committed into the log, then deliver every
        pending event in order (unless this thread is already delivering)."""
        ordered = self.sequencer
        lock = self._emit_lock
        lock.acquire()
        core = self._core
        try:
            pending = self._pending
            for event in ordered.take():
                if event.seq > core.seq:
                    core.seq = event.seq
                self._log.append(event)
                pending.append(event)
                if self._waiters.any:
                    self._waiters.offer(event)
            if core.draining:
                return  # a handler emitted: the running drain delivers it
            core.draining = True
            self._drainer = threading.get_ident()
            gate = self._gate
            if gate is not None:
                gate.enter()
            try:
                self._drain_pending(None)
            finally:
                core.draining = False
                self._drainer = None
                core.in_flight = None
                if gate is not None:
                    gate.exit()
        finally:
            lock.release()

    def attach(self, after_seq: int) -> None:
        """A store feed will report every seq after ``after_seq``."""
        self.sequencer.attach(after_seq)

    def remote(self, events: Sequence[Event], *, upto: int, own: Mapping[int, Event]) -> None:
        """Other processes' ``events`` (and copies of own ones) get their place in
        the order; ``drain`` delivers them. Ignored once the bus is closed."""
        if not self._core.closed:
            self.sequencer.remote(events, upto=upto, own=own)
