"""A loaded script: two engines, a lifecycle, and the handle users hold.

Lifecycle (SPEC §4): ``on_start`` (returning ``false`` aborts the start) →
``poll`` again and again (a returned number is the delay in ms before the
next poll) → ``on_stop`` (runs once after a successful start, also when the
script stops because of errors).

Statuses: ``loaded`` → ``starting`` → ``running`` → ``stopping`` →
``stopped`` | ``failed``.

Threads: ``start``, ``stop`` and ``reload`` may be called from any thread
(serialised by ``_control``). ``run_slice`` is called by the scheduler, by one
thread at a time, and is the only code that runs the main engine after the
chunk has loaded. The event engine is run by the bus's delivering thread. The
deferred queue is the only structure both sides touch; it is guarded by
``_queue_lock``.

Stopping: a stop request wakes the script; its sleeping task resumes with a
stop token (so ``sleep`` raises "script stopped"), deferred events that were
queued before the stop are delivered, then ``on_stop`` runs, the engines are
closed and the status becomes ``stopped`` (or ``failed``).
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
from moonbus.errors import ClosedError, ScriptError, ScriptTimeout
from moonbus.host.context import ScriptContext
from moonbus.host.engine_side import STOP_TOKEN, ScriptEngine
from moonbus.host.source import ScriptSource, load_source

__all__ = ["ScriptHost", "ScriptInfo"]

_log = logging.getLogger("moonbus.script")
_STOPPED_MESSAGE = "script stopped"


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


class _Task:
    """A suspended or runnable Lua coroutine of the main engine."""

    __slots__ = ("args", "coroutine", "kind", "started", "wake_at")

    def __init__(self, kind: str, coroutine: Any, args: tuple[Any, ...]) -> None:
        self.kind = kind
        self.coroutine = coroutine
        self.args = args
        self.wake_at = 0.0
        self.started = False


class ScriptHost:
    """One script instance. Users get it from ``Runtime.load``."""

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
        self._control = threading.RLock()
        self._queue_lock = threading.Lock()
        self._done = threading.Condition(self._control)
        self._status = "loaded"
        self._stats: dict[str, Any] = {}
        self._stats_lock = threading.Lock()
        self._errors: deque[str] = deque(maxlen=ctx.settings.max_errors_kept)
        self.polls = 0
        self.handler_errors = 0
        self.poll_errors = 0
        self._consecutive_failures = 0
        self._started_at: float | None = None
        self._event: ScriptEngine | None = None
        self._main: ScriptEngine | None = None
        self._script_table: Any = None
        self._life: _Task | None = None
        self._dtask: _Task | None = None
        self._deferred: deque[tuple[int, Event]] = deque()
        self._stop_requested = False
        self._failing = False
        self._start_ok = False
        self._next_poll = 0.0

    # ------------------------------------------------------------ properties
    @property
    def status(self) -> str:
        """``loaded``, ``starting``, ``running``, ``stopping``, ``stopped`` or ``failed``."""
        return self._status

    @property
    def stats(self) -> dict[str, Any]:
        """A copy of the script's ``stats`` panel."""
        with self._stats_lock:
            return dict(self._stats)

    @property
    def errors(self) -> list[str]:
        """The most recent error messages (oldest first)."""
        return list(self._errors)

    def info(self) -> ScriptInfo:
        """A consistent snapshot for listings."""
        started = self._started_at
        running = self._status in ("starting", "running", "stopping")
        return ScriptInfo(
            name=self.name,
            status=self._status,
            uptime=(time.monotonic() - started) if started is not None and running else 0.0,
            polls=self.polls,
            handler_errors=self.handler_errors,
            poll_errors=self.poll_errors,
            errors=tuple(self._errors),
            stats=self.stats,
        )

    def listeners(self) -> list[tuple[str, int, str]]:
        """(engine, id, pattern) of every active handler."""
        rows: list[tuple[str, int, str]] = []
        for side in (self._event, self._main):
            if side is not None and not side.engine.closed:
                rows.extend((side.kind, i, p) for i, p in side.listeners())
        return rows

    # --------------------------------------------------------------- errors
    def _record_error(self, what: str, exc: BaseException) -> None:
        text = f"{what}: {exc}"
        self._errors.append(text)
        trace = getattr(exc, "lua_traceback", "") or ""
        self._ctx.log(self.name, "host", "error", f"{text}\n{trace}".rstrip(), self._ctx.tick())
        _log.debug("script %s: %s", self.name, text)

    def _handler_error(self, what: str, exc: BaseException) -> None:
        self.handler_errors += 1
        self._record_error(what, exc)

    # --------------------------------------------------------------- control
    def start(self) -> None:
        """Load both engines and schedule ``on_start``.

        Raises ``ScriptSyntaxError``/``ScriptError`` if the chunk does not
        compile or its top-level code fails (status ``failed``). Event-engine
        handlers are live when this returns.
        """
        with self._control:
            if self._status in ("starting", "running", "stopping"):
                return
            self._reset_run_state()
            try:
                self._event = self._make_engine("event")
                self._main = self._make_engine("main")
                self._event.load_chunk()
                results = self._main.load_chunk()
            except BaseException as exc:
                self._close_engines()
                self._status = "failed"
                if isinstance(exc, ScriptError):
                    self._record_error("load", exc)
                raise
            self._script_table = None
            if results and self._main.engine.lua_type(results[0]) == "table":
                self._script_table = results[0]
            self._status = "starting"
            self._started_at = time.monotonic()
            self._life = self._new_lifecycle_task("on_start")
            if self._life is None:
                self._begin_running()
            self._ctx.scheduler.wake(self)

    def _reset_run_state(self) -> None:
        self._stop_requested = False
        self._failing = False
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
            stats_lock=self._stats_lock,
            ctx=self._ctx,
            on_deferred=self._enqueue,
            on_handler_error=self._handler_error,
            env_source=self._env_source,
        )

    def stop(self, *, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Ask the script to stop; with ``wait``, return once it has stopped.

        When no scheduler threads run (stepped mode), the stop is carried out
        on the calling thread. With deferred event delivery, events queued
        before the stop reach the handlers first.
        """
        deferred = self._ctx.deferred
        if deferred is not None:
            deferred.flush(timeout)
        with self._control:
            if self._status not in ("starting", "running", "stopping"):
                return
            self._stop_requested = True
            if self._status != "stopping":
                self._status = "stopping"
        scheduler = self._ctx.scheduler
        if not scheduler.threaded:
            if wait:
                scheduler.remove(self)
                self.run_slice(scheduler.clock())
            else:
                scheduler.wake(self)
            return
        scheduler.wake(self)
        if wait:
            with self._done:
                self._done.wait_for(lambda: self._status in ("stopped", "failed"), timeout)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the script is stopped or failed; returns the status."""
        with self._done:
            self._done.wait_for(lambda: self._status in ("stopped", "failed"), timeout)
            return self._status

    def reload(self, text: str | None = None) -> None:
        """Stop, re-read the source (or use ``text``), start again; shared values survive.

        The new source is compiled before the old instance is stopped, so a
        reload with a syntax error leaves the running script untouched.
        """
        fresh = load_source(self.source.path, text=text)
        probe = self._ctx.factory.create(f"{self.name}:check", memory_limit=None)
        try:
            probe.compile(fresh.text, fresh.chunkname, probe.new_env())
        finally:
            probe.close()
        was_running = self._status in ("starting", "running", "stopping")
        self.stop(wait=True)
        with self._control:
            self.source = fresh
        if was_running:
            self.start()

    # ------------------------------------------------------------- deferred
    def _enqueue(self, sub_id: int, event: Event) -> None:
        with self._queue_lock:
            if self._stop_requested:
                return
            self._deferred.append((sub_id, event))
        self._ctx.scheduler.wake(self)

    # ------------------------------------------------------------ lifecycle
    def _lifecycle_function(self, name: str) -> tuple[Any, tuple[Any, ...]] | None:
        main = self._main
        assert main is not None
        table = self._script_table
        if table is not None:
            func = table[name]
            if func is not None and main.engine.lua_type(func) == "function":
                return func, (table,)
            return None
        func = main.global_function(name)
        return (func, ()) if func is not None else None

    def _new_lifecycle_task(self, name: str) -> _Task | None:
        found = self._lifecycle_function(name)
        if found is None:
            return None
        func, args = found
        assert self._main is not None
        return _Task(name, self._main.engine.new_task(func), args)

    def _begin_running(self) -> None:
        self._status = "stopping" if self._stop_requested else "running"
        self._start_ok = True
        self._next_poll = self._ctx.scheduler.clock()

    def _step(self, task: _Task, *, stopping: bool) -> tuple[str, Any]:
        """Resume ``task`` once; ("sleep", ms) | ("done", results) | ("error", exc)."""
        main = self._main
        assert main is not None
        settings = self._ctx.settings
        limit = settings.handler_timeout if task.kind == "deferred" else settings.lifecycle_timeout
        if task.started:
            args: tuple[Any, ...] = (STOP_TOKEN,) if stopping else ()
        else:
            args = task.args
            task.started = True
        try:
            return main.engine.step(task.coroutine, *args, limit=limit)
        except (ScriptError, ClosedError) as exc:
            return "error", exc

    def _is_stop_error(self, exc: BaseException) -> bool:
        return isinstance(exc, ScriptError) and _STOPPED_MESSAGE in str(exc).split("\n", 1)[0]

    def run_slice(self, now: float) -> float | None:
        """Scheduler entry point: do what is due at ``now`` (see the module docstring)."""
        with self._control:
            if self._status not in ("starting", "running", "stopping") or self._main is None:
                return None
            if self._stop_requested:
                self._finish(now)
                return None
            self._run_deferred(now, stopping=False)
            if self._status in ("starting", "running"):
                self._run_lifecycle(now)
            if self._stop_requested or self._status in ("stopped", "failed"):
                if self._status not in ("stopped", "failed"):
                    self._finish(now)
                return None
            return self._next_due(now)

    def _next_due(self, now: float) -> float | None:
        candidates: list[float] = []
        if self._dtask is not None:
            candidates.append(self._dtask.wake_at)
        elif self._deferred:
            candidates.append(now)
        if self._life is not None:
            candidates.append(self._life.wake_at)
        elif self._status == "running":
            candidates.append(self._next_poll)
        return min(candidates) if candidates else None

    def _run_deferred(self, now: float, *, stopping: bool) -> None:
        main = self._main
        assert main is not None
        while True:
            task = self._dtask
            if task is None:
                with self._queue_lock:
                    if not self._deferred:
                        return
                    sub_id, event = self._deferred.popleft()
                try:
                    coroutine, args = main.deferred_task(sub_id, event)
                except (ScriptError, TypeError) as exc:
                    self._handler_error("deferred handler", exc)
                    continue
                task = _Task("deferred", coroutine, args)
            elif task.wake_at > now and not stopping:
                return
            outcome, value = self._step(task, stopping=stopping)
            if outcome == "sleep" and not stopping:
                task.wake_at = now + float(value or 0) / 1000.0
                self._dtask = task
                return
            self._dtask = None
            if outcome == "sleep":  # stopping: resume again so sleep() raises
                self._dtask = task
                continue
            if outcome == "error" and not self._is_stop_error(value):
                self._handler_error("deferred handler", value)

    def _run_lifecycle(self, now: float) -> None:
        task = self._life
        deadline: float | None = None  # a poll starting now: the deadline it is run for
        if task is None:
            if self._status != "running" or now < self._next_poll:
                return
            deadline = self._next_poll
            task = self._new_lifecycle_task("poll")
            if task is None:
                self._next_poll = now + 3600.0  # nothing to poll; handlers only
                return
            self._life = task
        elif task.wake_at > now:
            return
        outcome, value = self._step(task, stopping=False)
        if outcome == "sleep":
            task.wake_at = now + float(value or 0) / 1000.0
            return
        self._life = None
        if task.kind == "on_start":
            self._after_start(outcome, value)
        else:
            self._after_poll(now, outcome, value, deadline)

    def _after_start(self, outcome: str, value: Any) -> None:
        if outcome == "error":
            self._record_error("on_start", value)
            self._status = "failed"
            self._close_engines()
            return
        if value and value[0] is False:
            self._ctx.log(self.name, "host", "info", "on_start returned false: not started",
                          self._ctx.tick())
            self._status = "stopped"
            self._close_engines()
            return
        self._begin_running()

    def _after_poll(self, now: float, outcome: str, value: Any, deadline: float | None) -> None:
        """Count the poll and set the next one.

        Fixed schedule (SPEC §10): a poll that finished in the slice it
        started in (it did not sleep) is next due at ``deadline + delay``,
        the deadline it ran for plus the delay it returned, not ``now +
        delay``; so lateness within a frame never adds up, and ``return 100``
        under a 60 fps clock runs every 6th frame for ever. A poll that fell
        a whole delay behind, or slept, counts its delay from ``now`` (no
        burst of catch-up polls; a sleep's time is not taken from the delay).
        """
        settings = self._ctx.settings
        if outcome == "error":
            self.poll_errors += 1
            self._consecutive_failures += 1
            self._record_error("poll", value)
            if self._consecutive_failures >= settings.max_poll_failures:
                self._record_error(
                    "host",
                    ScriptError(
                        f"{self._consecutive_failures} consecutive poll failures: stopping"
                    ),
                )
                self._failing = True
                self._stop_requested = True
            self._next_poll = now + settings.poll_delay
            return
        self.polls += 1
        self._consecutive_failures = 0
        delay = value[0] if value else None
        if isinstance(delay, (int, float)) and not isinstance(delay, bool) and delay >= 0:
            seconds = float(delay) / 1000.0
        else:
            seconds = settings.poll_delay
        scheduled = None if deadline is None else deadline + seconds
        self._next_poll = scheduled if scheduled is not None and scheduled > now \
            else now + seconds

    def _finish(self, now: float) -> None:
        """Stop now: end the sleeping task, deliver queued deferred events, run on_stop."""
        failed = self._failing
        self._status = "stopping"
        for side in (self._event, self._main):
            if side is not None:
                for sub in list(side.subscriptions.values()):
                    sub.cancel()
        life = self._life
        self._life = None
        if life is not None and life.started:
            outcome, value = self._step(life, stopping=True)
            while outcome == "sleep":
                outcome, value = self._step(life, stopping=True)
            if outcome == "error" and not self._is_stop_error(value):
                self._record_error(life.kind, value)
                if life.kind == "on_start":
                    self._start_ok = False
                    failed = True
        self._run_deferred(now, stopping=True)
        if self._start_ok:
            task = self._new_lifecycle_task("on_stop")
            if task is not None:
                outcome, value = self._step(task, stopping=True)
                while outcome == "sleep":
                    outcome, value = self._step(task, stopping=True)
                if outcome == "error" and not self._is_stop_error(value):
                    self._record_error("on_stop", value)
                    if isinstance(value, ScriptTimeout):
                        failed = True
        self._close_engines()
        self._status = "failed" if failed else "stopped"
        self._done.notify_all()

    def _close_engines(self) -> None:
        for side in (self._event, self._main):
            if side is not None:
                side.close()
        self._event = None
        self._main = None
        self._script_table = None
        self._ctx.scheduler.remove(self)
        self._done.notify_all()

    def close(self) -> None:
        """Stop (if running) and release everything."""
        self.stop(wait=True)
        with self._control:
            self._close_engines()

    def __repr__(self) -> str:
        return f"<ScriptHost {self.name!r} {self._status}>"
