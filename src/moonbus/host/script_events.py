"""The host hears about scripts without polling (SPEC §10).

Every status change that matters to a host (a script *started* running,
*stopped*, *failed*) and every handler error a script logs becomes one
``ScriptEvent`` record. The runtime's ``ScriptEventHub`` hands it

* to the listeners (``Runtime(on_script_event=fn)``, ``rt.add_script_listener(fn)``),
* and to the bus, as an event of type ``script:started``, ``script:stopped``,
  ``script:failed`` or ``script:handler_error`` with ``source="moonbus"``
  (game events cannot collide: the host and scripts emit what they like,
  but only moonbus uses ``source="moonbus"``; ``events:on("script:*", ...)``
  or ``bus.on("script:*", ...)`` catches all four).

On the bus only when asked for: while some subscription names the type or
a pattern other than ``*`` that selects it (``script:*``). A game that does
not listen for them keeps its event log, its store and its ``seq`` numbers
to its own events (a recorded run replays the same), and a script's
``events:on("*", ...)`` alone does not bring them into being.

Not synchronously: a status changes while the script's control lock is held
(and a handler error on whatever thread ran the handler), so the record is
queued and delivered by the hub's notifier, outside every script lock. A
listener may therefore stop or reload scripts. The notifier is a daemon
thread in a threaded runtime and ``run_due()`` (your thread) in a stepped
one, so a stepped game hears about its scripts inside its own loop.

No loop through the bus: an error a handler raises *while handling one of
these events* (a script's ``events:on("*", ...)`` that fails on everything)
is counted, logged and given to the listeners, but not emitted as a new
``script:handler_error`` event: in immediate delivery the notifier knows it
is inside its own emit (``handling``). With deferred delivery the handlers run
later on the event thread, so the hub also emits at most one
``script:handler_error`` event per script per ``error_log_window`` (1 s), the
first error of that window; the log and the listeners still hear about the
others. Either way a failing ``*`` handler cannot feed itself.

Bounded: at most ``HostSettings.max_script_event_backlog`` (10,000) records
wait for the notifier; past it, handler-error records are dropped and
counted (``dropped``): a script failing with a new error text on every event
cannot grow the queue while a listener is slow. Status changes always go.

Threads: ``post`` from any thread; listeners run on the notifier (the
``moonbus-script-events`` thread, or the thread calling ``run_due``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from moonbus.bus.patterns import matches
from moonbus.errors import ClosedError

if TYPE_CHECKING:
    from moonbus.bus import Bus
    from moonbus.host.error_log import HandlerErrorLog
    from moonbus.host.event_names import EventNameChecker

__all__ = [
    "MOONBUS_SOURCE", "SCRIPT_EVENT_TYPES", "ObservedStatus", "ScriptEvent",
    "ScriptEventHub", "ScriptEventStatistics", "ScriptListener",
]

_log = logging.getLogger("moonbus.runtime")

MOONBUS_SOURCE = "moonbus"
# what -> bus event type
SCRIPT_EVENT_TYPES: Mapping[str, str] = {
    "started": "script:started",
    "stopped": "script:stopped",
    "failed": "script:failed",
    "handler_error": "script:handler_error",
}
_STATUS_EVENTS = {"running": "started", "stopped": "stopped", "failed": "failed"}


@dataclass(frozen=True)
class ScriptEvent:
    """What happened to a script.

    ``what`` is ``started``, ``stopped``, ``failed`` or ``handler_error``;
    ``status`` the script's status when it happened; ``error`` the error text
    (the failure's reason, or the handler error's headline, or its summary
    "... repeated N more times"); ``count`` how many errors the record stands
    for (1, or N for a summary); ``tick`` the game tick then.
    """

    script: str
    what: str
    status: str
    error: str | None
    tick: int | None
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The bus event's data."""
        return {"script": self.script, "what": self.what, "status": self.status,
                "error": self.error, "count": self.count}


ScriptListener = Callable[[ScriptEvent], None]
# (record, emit on the bus, call first, error log to stop watching)
_Pending = tuple[ScriptEvent, bool, Callable[[], None] | None, int | None]


@dataclass(frozen=True)
class ScriptEventStatistics:
    """Counters of the hub (``Runtime.script_event_statistics()``)."""

    posted: int
    delivered: int
    pending: int
    listener_errors: int
    bus_events: int
    bus_events_held: int  # handler errors not emitted (loop guard or one-per-window)
    dropped: int  # handler-error records dropped: the backlog was full
    emit_errors: int  # bus events that could not be emitted (logged)
    errors_forgotten: int  # distinct handler errors dropped at max_distinct_errors
    event_names_learned: int  # names learned from scripts' emits (max_event_names)
    undeclared_event_names: int  # warnings logged (moonbus.host.event_names)


class ObservedStatus:
    """A ``ScriptHost._status`` attribute that reports the changes that matter.

    One point sees every status change, wherever the lifecycle code sets it;
    the report only queues a record (see the module docstring).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_observed{name}"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> ObservedStatus: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> str: ...

    def __get__(self, obj: object, objtype: type | None = None) -> ObservedStatus | str:
        if obj is None:
            return self  # looked up on the class (introspection)
        value: str = obj.__dict__[self._slot]
        return value

    def __set__(self, obj: Any, value: str) -> None:
        old = obj.__dict__.get(self._slot)
        obj.__dict__[self._slot] = value
        what = _STATUS_EVENTS.get(value)
        if what is not None and old != value:
            obj._status_event(what, value)


class ScriptEventHub:
    """Queues ``ScriptEvent`` records and delivers them (see the module docstring)."""

    def __init__(self, *, bus: Bus, threaded: bool, clock: Callable[[], float],
                 window: Callable[[], float] = lambda: 1.0,
                 max_backlog: Callable[[], int] = lambda: 10_000) -> None:
        self._bus = bus
        self._clock = clock
        self._threaded = threaded
        self._listeners: list[ScriptListener] = []
        self._pending: deque[_Pending] = deque()
        self._logs: dict[int, tuple[HandlerErrorLog, Callable[[float, bool], None]]] = {}
        self._cond = threading.Condition(threading.Lock())
        self._run_lock = threading.Lock()
        self._local = threading.local()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_error_event: dict[str, float] = {}
        self._window = window  # HostSettings.error_log_window, read live
        self._max_backlog = max_backlog  # HostSettings.max_script_event_backlog
        self.dropped = 0
        self.emit_errors = 0
        self.errors_forgotten = 0
        self.posted = self.delivered = self.listener_errors = 0
        self.bus_events = self.bus_events_held = 0

    # ------------------------------------------------------------ listeners
    def add_listener(self, listener: ScriptListener) -> Callable[[], None]:
        """Call ``listener(record)`` for every record from now on; returns a
        function that removes it again."""
        if not callable(listener):
            raise TypeError(f"a script listener must be callable, got {type(listener).__name__}")
        with self._cond:
            self._listeners.append(listener)

        def remove() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    # ------------------------------------------------------------- producers
    @property
    def handling(self) -> bool:
        """True on the notifier thread while it emits a ``script:*`` event
        (handlers erring now are handling one)."""
        return bool(getattr(self._local, "emitting", False))

    def post(self, event: ScriptEvent, *, emit: bool = True,
             before: Callable[[], None] | None = None, forget: int | None = None) -> None:
        """Queue ``event`` for the listeners (and the bus, with ``emit``); any
        thread. The notifier first calls ``before()`` and stops watching the
        error log ``forget`` (a script that ended: its last summaries)."""
        if event.what == "handler_error" and emit:
            emit = self._may_emit_error(event.script)
        with self._cond:
            if self._closed:
                return
            if event.what == "handler_error" and len(self._pending) >= self._max_backlog():
                self.dropped += 1  # a flood of distinct errors; status changes always go
                return
            self.posted += 1
            self._pending.append((event, emit, before, forget))
            if self._threaded:
                self._ensure_thread()
                self._cond.notify()

    def _may_emit_error(self, script: str) -> bool:
        now = self._clock()
        with self._cond:
            if self.handling:
                self.bus_events_held += 1
                return False
            last = self._last_error_event.get(script)
            if last is not None and now - last < self._window():
                self.bus_events_held += 1
                return False
            self._last_error_event[script] = now
            return True

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to one of the counters (``errors_forgotten``); any thread."""
        with self._cond:
            setattr(self, counter, getattr(self, counter) + n)

    def watch_log(self, key: int, log: HandlerErrorLog,
                  write: Callable[[float, bool], None]) -> None:
        """Have ``write(now, force)`` called when ``log`` has summaries due."""
        with self._cond:
            known = self._logs.get(key)
            if known is not None and known[0] is log:
                return  # already watched: the notifier looks once a window
            self._logs[key] = (log, write)
            if self._threaded:
                self._ensure_thread()
                self._cond.notify()

    # -------------------------------------------------------------- delivery
    def dispatch(self) -> int:
        """Deliver what is queued, on this thread, and write due error summaries;
        returns how many records were delivered. Re-entrant calls return 0."""
        if not self._run_lock.acquire(blocking=False):
            return 0
        try:
            now = self._clock()
            for log, write in list(self._logs.values()):
                if log.pending:
                    write(now, False)
            done = 0
            while True:
                with self._cond:
                    if not self._pending:
                        return done
                    event, emit, before, forget = self._pending.popleft()
                    listeners = list(self._listeners)
                    if forget is not None:
                        self._logs.pop(forget, None)
                if before is not None:
                    before()
                self._deliver(event, emit, listeners)
                done += 1
        finally:
            self._run_lock.release()

    def _deliver(self, event: ScriptEvent, emit: bool, listeners: list[ScriptListener]) -> None:
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                _log.exception("script listener %r failed on %s", listener, event)
        self.delivered += 1
        event_type = SCRIPT_EVENT_TYPES[event.what]
        if not emit or not self._wanted(event_type):
            return
        self._local.emitting = True
        try:
            self._bus.emit(event_type, event.to_dict(), source=MOONBUS_SOURCE,
                           tick=event.tick)
            self.bus_events += 1
        except ClosedError:
            pass
        except Exception:  # a refused store append, a replaced emit: the notifier goes on
            self.emit_errors += 1
            _log.exception("emitting %s", event_type)
        finally:
            self._local.emitting = False

    def _wanted(self, event_type: str) -> bool:
        """Whether someone subscribed to ``event_type`` by name or by a pattern
        other than ``*`` (``script:*``): only then is it emitted (see the module)."""
        return any(sub.active and sub.pattern != "*" and matches(sub.pattern, event_type)
                   for sub in self._bus.subscriptions())

    def _ensure_thread(self) -> None:
        """Start the notifier thread (under ``_cond``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="moonbus-script-events",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                if not self._pending and not self._closed:
                    # While scripts run, look at their error logs once a window.
                    cond.wait(max(0.01, self._window()) if self._logs else None)
                if self._closed and not self._pending:
                    return
            self.dispatch()

    # ----------------------------------------------------------------- close
    def statistics(self, names: EventNameChecker | None = None) -> ScriptEventStatistics:
        """The counters, with those of the undeclared-event-name checker when given."""
        with self._cond:
            return ScriptEventStatistics(
                posted=self.posted, delivered=self.delivered, pending=len(self._pending),
                listener_errors=self.listener_errors, bus_events=self.bus_events,
                bus_events_held=self.bus_events_held, dropped=self.dropped,
                emit_errors=self.emit_errors, errors_forgotten=self.errors_forgotten,
                event_names_learned=0 if names is None else names.learned,
                undeclared_event_names=0 if names is None else names.warnings,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the notifier (idempotent)."""
        if self._thread is None:
            self.dispatch()
        with self._cond:
            self._closed = True
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
