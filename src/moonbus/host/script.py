"""A loaded script: two engines, a lifecycle, and the handle users hold.

The main engine exists only while the chunk defines a lifecycle function
(``on_start``, ``poll`` or ``on_stop``): a handler-only script runs in its
event engine alone (``start``).

Lifecycle (SPEC §4): ``on_start`` (returning ``false`` aborts the start) →
``poll`` again and again (a returned number is the delay in ms before the
next poll) → ``on_stop`` (runs once after a successful start, also when the
script stops because of errors).

Statuses: ``loaded`` → ``starting`` → ``running`` → ``stopping`` →
``stopped`` | ``failed``.

Threads and locks (in the only order they are ever taken):

* ``_control`` (an RLock), the *script-thread* lock: held by the thread that
  runs the main engine (the script thread): ``run_slice`` (a scheduler worker, or the stepping
  thread), ``start`` while it loads the chunk, ``close`` when it releases the
  engines. It may be held for a whole Lua call, during which the script may
  ``emit`` (and so wait for the bus's ``_emit_lock``).
* the bus's ``_emit_lock`` (taken by the script's own emits).
* ``_state`` (a Lock, with the ``_done`` condition): guards ``_status``,
  ``_stop_requested`` and ``_failing``. A leaf: never held while Lua runs
  or while calling out (bus, scheduler, logs).

``stop`` takes only ``_state``, so it may be called from any thread (a bus
subscriber, the event thread, a host API the script itself calls) without
waiting for the script's running call: it cannot deadlock with a poll that
emits. It waits for the end (``wait=True``) only where waiting can work: not
on the thread that runs the script and not on a thread inside ``emit`` (the
script may need that thread's delivery to end before it can emit and
finish); there it only asks for the stop. The event engine is run by the
bus's delivering thread. The deferred queue is the only structure both
sides touch; it is guarded by ``_queue_lock``.

Stopping ("stop always wins", SPEC §4b) is carried out by the script thread, under
one stop budget (the lifecycle limit): see ``moonbus.host.lifecycle``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moonbus.bus import Event
from moonbus.bus.cascade import CascadeLink
from moonbus.errors import ScriptError, ScriptLimitError
from moonbus.host.budget import TimeoutWatch
from moonbus.host.context import ScriptContext
from moonbus.host.engine_side import ScriptEngine
from moonbus.host.event_on_demand import EventOnDemand
from moonbus.host.lifecycle import ACTIVE, ENDED, LifecycleTask
from moonbus.host.memory_caps import ScriptLimitCounters, ScriptLimitStatistics
from moonbus.host.poll_latency import PollLatency, PollLatencyStatistics
from moonbus.host.reporter import ScriptReporter
from moonbus.host.script_call import call_in_engine
from moonbus.host.script_eval import eval_in_engine
from moonbus.host.script_events import ObservedStatus
from moonbus.host.self_stop import SelfStop
from moonbus.host.source import ScriptSource, load_source
from moonbus.host.stats_panel import StatsPanel

__all__ = ["ScriptHost", "ScriptInfo", "ScriptStatistics"]

_log = logging.getLogger("moonbus.script")


@dataclass(frozen=True)
class ScriptInfo:
    """A snapshot of one script for admin listings and summaries."""

    name: str
    status: str
    uptime: float
    polls: int
    handler_errors: int
    poll_errors: int
    errors: tuple[str, ...]
    stats: Mapping[str, Any]
    # Containment counters (SPEC §4b): handler budgets exhausted (timeouts),
    # handler calls skipped (budget spent or script blocked), events:on refused
    # (max_handlers_per_script), and why the host stopped it ("" if it did not).
    handler_timeouts: int = 0
    handlers_skipped: int = 0
    handlers_refused: int = 0
    quarantined: str = ""
    # Handler calls run (event and main engine, all runs: moonbus.host.budget).
    handler_calls: int = 0


@dataclass(frozen=True)
class ScriptStatistics:
    """Counters of one script for ``statistics()``: its run, its deferred queue
    now, and how often it hit its host-side memory caps (``limits``)."""

    name: str
    status: str
    polls: int
    handler_errors: int
    poll_errors: int
    deferred_queued: int
    limits: ScriptLimitStatistics
    handler_calls: int
    poll_latency: PollLatencyStatistics  # how late polls started (moonbus.host.poll_latency)


class ScriptHost(SelfStop, EventOnDemand):
    """One script instance. Users get it from ``Runtime.load``."""

    _status = ObservedStatus()  # changes reach the host (moonbus.host.script_events)

    def __init__(
        self,
        *,
        name: str,
        source: ScriptSource,
        options: Mapping[str, Any],
        shared: Any,
        ctx: ScriptContext,
        env_source: str,
    ) -> None:
        self.name = name
        self.source = source
        self.options = dict(options)
        self.shared = shared
        self._ctx = ctx
        self._env_source = env_source
        self._control = threading.RLock()  # the script-thread lock (module docstring)
        self._state = threading.Lock()  # leaf lock: _status, _stop_requested, _failing
        self._done = threading.Condition(self._state)
        self._runner: int | None = None  # ident of the thread in run_slice (under _control)
        self._queue_lock = threading.Lock()
        self._status = "loaded"
        # Host-side memory caps (SPEC §4b): counted here, for both engines.
        self._limits = ScriptLimitCounters()
        self._stats = StatsPanel(ctx.settings, self._limits)
        self._errors: deque[str] = deque(maxlen=ctx.settings.max_errors_kept)
        self._reload_to: Any = None  # a reload left to the script thread (host/self_stop.py)
        self._reporter = ScriptReporter(name=name, ctx=ctx, source=source, errors=self._errors,
                                        limits=self._limits)
        self.polls = 0
        self.handler_errors = 0
        self.poll_errors = 0
        self._consecutive_failures = 0
        # Handler budget exhaustions (too many stop the script: _quarantine),
        # and the counters of engines already closed.
        self._timeouts = TimeoutWatch()
        self.quarantined = ""
        self._skipped_before = 0
        self._refused_before = 0
        self._calls_before = 0
        self._poll_latency = PollLatency()
        self._started_at: float | None = None
        self._event: ScriptEngine | None = None
        self._event_released = False  # closed until call/evaluate (host/event_on_demand.py)
        self._main: ScriptEngine | None = None
        self._life: LifecycleTask | None = None
        self._dtask: LifecycleTask | None = None
        self._deferred: deque[tuple[int, Event, CascadeLink]] = deque()
        self._stop_requested = False
        self._failing = False
        self._start_ok = False
        self._next_poll = 0.0
        self._warned: set[str] = set()  # kinds of clamp already logged this run

    # ------------------------------------------------------------ properties
    @property
    def status(self) -> str:
        """``loaded``, ``starting``, ``running``, ``stopping``, ``stopped`` or ``failed``."""
        return self._status

    @property
    def stats(self) -> dict[str, Any]:
        """A copy of the script's ``stats`` panel."""
        return self._stats.snapshot()

    @property
    def errors(self) -> list[str]:
        """The most recent error messages (oldest first)."""
        return list(self._errors)

    def info(self) -> ScriptInfo:
        """A consistent snapshot for listings."""
        started = self._started_at
        running = self._status in ACTIVE
        return ScriptInfo(
            name=self.name,
            status=self._status,
            uptime=(time.monotonic() - started) if started is not None and running else 0.0,
            polls=self.polls,
            handler_errors=self.handler_errors,
            poll_errors=self.poll_errors,
            errors=tuple(self._errors),
            stats=self.stats,
            handler_timeouts=self._timeouts.total,
            handlers_skipped=self.handlers_skipped,
            handlers_refused=self.handlers_refused,
            quarantined=self.quarantined,
            handler_calls=self.handler_calls,
        )

    def statistics(self) -> ScriptStatistics:
        """Counters of this script, including its memory-cap counters."""
        with self._queue_lock:
            queued = len(self._deferred)
        return ScriptStatistics(
            name=self.name,
            status=self._status,
            polls=self.polls,
            handler_errors=self.handler_errors,
            poll_errors=self.poll_errors,
            deferred_queued=queued,
            limits=self._limits.snapshot(),
            handler_calls=self.handler_calls,
            poll_latency=self._poll_latency.snapshot(),
        )

    @property
    def handler_timeouts(self) -> int:
        """Handler budgets exhausted (a handler aborted by its time limit)."""
        return self._timeouts.total

    @property
    def handlers_skipped(self) -> int:
        """Handler calls not run: the script's budget for the event was spent,
        or the script was being stopped for exhausting it (all runs)."""
        side = self._event
        return self._skipped_before + (int(side.budget.skipped) if side is not None else 0)

    @property
    def handler_calls(self) -> int:
        """Handler calls run, by either engine (ended, failed or cut; all runs).
        Counted in the engines' ``HandlerBudget`` (one add per C engine call)."""
        live = sum(int(s.budget.calls) for s in (self._event, self._main) if s is not None)
        return self._calls_before + live

    @property
    def handlers_refused(self) -> int:
        """``events:on``/``once`` calls refused by ``max_handlers_per_script`` (all runs)."""
        live = sum(s.handlers_refused for s in (self._event, self._main) if s is not None)
        return self._refused_before + live

    def listeners(self) -> list[tuple[str, int, str]]:
        """(engine, id, pattern) of every active handler."""
        rows: list[tuple[str, int, str]] = []
        for side in (self._event, self._main):
            if side is not None and not side.engine.closed:
                rows.extend((side.kind, i, p) for i, p in side.listeners())
        return rows

    def _status_event(self, what: str, status: str) -> None:
        self._reporter.status(what, status)

    def call(self, fn_name: str, *args: Any) -> Any:
        """Call the script's global function (or script-table method) ``fn_name``
        with ``args`` and return its result as Python data; from any thread.

        Runs in the event engine, under the handler time limit (see
        ``moonbus.host.script_call`` for why); raises ``ScriptError`` or
        ``ScriptTimeout`` naming the script and the function.
        """
        return call_in_engine(self._event_for_call(), self.name, self._status, fn_name, args,
                              self._ctx.settings.handler_timeout)

    def evaluate(self, source: str, *, width: int = 4000) -> str:
        """Run the Lua ``source`` in the script's event engine; its values printed
        Lua-style (at most ``width`` characters). For the admin ``script.eval``:
        see ``moonbus.host.script_eval``. Any thread; under the handler time limit."""
        return eval_in_engine(self._event_for_call(), self.name, self._status, source,
                              self._ctx.settings.handler_timeout, width)

    # --------------------------------------------------------------- control
    def start(self) -> None:
        """Load the event engine, then the main engine if the chunk defines a
        lifecycle function, and schedule ``on_start``.

        Raises ``ScriptSyntaxError``/``ScriptError`` if the chunk does not
        compile or its top-level code fails (status ``failed``). Event-engine
        handlers are live when this returns.
        """
        with self._control:
            if self._status in ACTIVE:
                return
            self._reset_run_state()
            try:
                self._event = self._make_engine("event")
                self._event.load_chunk()
                # Handler-only scripts (most of them, when there are thousands)
                # get no main engine: it would only run the top-level code a
                # second time and keep a Lua state that never runs again. A
                # reload decides afresh (docs/scripting.md).
                if self._event.defines_lifecycle():
                    # Nothing for the event engine to deliver: closed until a
                    # call/evaluate needs it (host/event_on_demand.py).
                    self._release_idle_event_engine()
                    self._main = self._make_engine("main")
                    self._main.load_chunk()
            except BaseException as exc:
                self._close_engines()
                if isinstance(exc, ScriptError):
                    self._record_error("load", exc)  # first: the failure reports it
                self._set_status("failed")
                raise
            self._set_status("starting")
            self._started_at = time.monotonic()
            self._life = self._new_lifecycle_task("on_start")
            if self._life is None:
                self._begin_running()
            self._ctx.scheduler.wake(self)

    def _reset_run_state(self) -> None:
        with self._state:
            self._stop_requested = False
            self._failing = False
        self._warned.clear()
        self.quarantined = ""
        self._timeouts.reset()
        self._start_ok = False
        self._consecutive_failures = 0
        self._life = None
        self._dtask = None
        with self._queue_lock:
            self._deferred.clear()

    def _make_engine(self, kind: str) -> ScriptEngine:
        return ScriptEngine(
            kind=kind,
            script_name=self.name,
            source=self.source,
            options=self.options,
            shared=self.shared,
            stats=self._stats,
            limits=self._limits,
            ctx=self._ctx,
            on_deferred=self._enqueue,
            on_handler_error=self._handler_error,
            env_source=self._env_source,
        )

    def stop(self, *, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Ask the script to stop; with ``wait``, return once it has stopped.

        Any thread may call it (see the module docstring): it never waits for
        the script's running call to reach a lock, and returns within
        ``timeout`` seconds in all cases. It does not wait on the thread
        running this script nor on a thread inside ``emit``: there it only
        asks for the stop (or does it: ``_stop_here``). Stepped mode: the
        stop runs on the calling thread. With deferred event delivery,
        events queued before the stop reach the handlers first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        can_wait = self._can_wait()
        deferred = self._ctx.deferred
        if deferred is not None and can_wait:
            deferred.flush(_left(deadline))
        if not self._request_stop():
            return
        scheduler = self._ctx.scheduler
        if not scheduler.threaded:
            if wait and can_wait:
                scheduler.remove(self)
                self.run_slice(scheduler.clock())
            else:
                scheduler.wake(self)
            return
        scheduler.wake(self)
        if wait and can_wait:
            with self._done:
                self._done.wait_for(lambda: self._status in ENDED, _left(deadline))
        elif wait:
            self._stop_here()

    def _can_wait(self) -> bool:
        """Whether the calling thread may wait for this script's script thread:
        not when it is that thread, nor, with worker threads, when it holds the
        bus's emit lock, which the script thread may need in order to finish,
        or is inside a call of one of its engines (closing it waits for that)."""
        if self._runner == threading.get_ident():
            return False
        return not (self._ctx.scheduler.threaded and (self._ctx.bus.emitting_here() or
                                                      self._inside()))

    def wait(self, timeout: float | None = None) -> str:
        """Block until the script is stopped or failed; returns the status."""
        with self._done:
            self._done.wait_for(lambda: self._status in ENDED, timeout)
            return self._status

    def reload(self, text: str | None = None) -> None:
        """Stop, re-read the source (or use ``text``), start again; shared values survive.

        The new source is compiled before the old instance is stopped, so a
        reload with a syntax error leaves the running script untouched.
        """
        settings = self._ctx.settings
        fresh = load_source(self.source.path, text=text, max_bytes=settings.max_source_bytes)
        probe = self._ctx.factory.create(
            f"{self.name}:check", memory_limit=None, max_source_bytes=settings.max_source_bytes
        )
        try:
            probe.compile(fresh.text, fresh.chunkname, probe.new_env(),
                          limit=settings.lifecycle_timeout)
        finally:
            probe.close()
        was_running = self._status in ACTIVE
        self.stop(wait=True)
        if was_running and self._reload_after_stop(fresh):
            return  # a script thread is stopping it and starts it again (host/self_stop.py)
        with self._control:
            self.source = fresh
            self._reporter.retarget(fresh)
        if was_running:
            self.start()

    # ------------------------------------------------------------- deferred
    def _enqueue(self, sub_id: int, event: Event) -> None:
        # Bus thread. The queue is capped (max_deferred_events): past it the
        # script is stopped as failed, and what it had queued is discarded and
        # said so (never a silent drop of some events while it keeps running).
        # The event's cascade goes with it, so what the handler emits later
        # (runner thread) counts against it.
        cause = self._ctx.bus.current_cause()
        limit = self._ctx.settings.max_deferred_events
        with self._queue_lock:
            if self._stop_requested:
                return
            queued = len(self._deferred)
            overflow = queued >= limit
            if overflow:
                self._deferred.clear()
                self._request_stop(failing=True)  # _state is a leaf: safe under this lock
            else:
                self._deferred.append((sub_id, event, cause))
                if queued >= self._limits.deferred_peak:
                    self._limits.deferred_peak = queued + 1
        if overflow:
            self._limits.count("deferred_overflows")
            self._record_error("host", ScriptLimitError(
                f"deferred queue limit of {limit} events (max_deferred_events) reached at "
                f"event '{event.type}' seq={event.seq}: stopping the script; its {queued} "
                "queued events are not delivered"
            ))
        self._ctx.scheduler.wake(self)

    def close(self, *, timeout: float | None = 30.0) -> None:
        """Stop (if running) and release everything; returns within about ``timeout``.

        Where ``stop`` cannot wait (see there), or when the script thread
        does not let go in time, the engines are released by the script thread
        when the stop it was asked for ends.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.stop(wait=True, timeout=timeout)
        can_wait = self._can_wait()
        left = _left(deadline)
        if not can_wait:  # (a stop left to the script thread: closing here would drop it)
            acquired = self._status not in ACTIVE and self._control.acquire(blocking=False)
        else:
            acquired = self._control.acquire(timeout=-1 if left is None else left)
        if not acquired:
            _log.warning("script %s: still running at close; it is released when its stop ends",
                         self.name)
            return
        try:
            self._close_engines()
        finally:
            self._control.release()

    def __repr__(self) -> str:
        return f"<ScriptHost {self.name!r} {self._status}>"


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
