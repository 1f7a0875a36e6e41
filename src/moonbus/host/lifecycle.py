"""What the script thread does with a script: start, poll, deferred events, stop.

``ScriptLifecycle`` is the half of ``ScriptHost`` (``host/script.py``) that runs
on the *script thread*, under ``_control`` (whichever thread runs the script's
main engine now: a scheduler worker, or the stepping thread; not the job
threads of ``moonbus.runner``): ``run_slice`` and everything it calls. The other half
(``start``, ``stop``, ``close``...: any thread) lives in ``script.py``; both
share the fields declared below, with the locks that module's docstring
lists.

Main-engine work runs as Lua coroutines (``LifecycleTask``) that yield when the
script calls ``sleep``; ``run_slice`` resumes what is due and tells the
scheduler when it next has work.

Delays the script gives (``poll``'s return value, ``sleep``) go through
``moonbus.host.limits.script_delay``: NaN is a script error, a negative delay
is 0, a delay over ``max_poll_delay`` is clamped (counted, logged once per
kind), so no bad number reaches the scheduler.

Stopping ("stop always wins", SPEC §4b): the sleeping task resumes with a
stop token (``sleep`` raises "script stopped"), deferred events queued before
the stop are delivered, then ``on_stop`` runs, the engines are closed and the
status becomes ``stopped`` (or ``failed``). All that code shares one *stop
budget*, the lifecycle limit (``HostSettings.lifecycle_timeout``), from when
the script thread starts the stop: no new call starts once it has passed, and each
call's own (CPU-time) limit is capped by what is left of it. A task that
catches "script stopped" and calls ``sleep`` again is not resumed again (it
is dropped where it sleeps); code still running past its limit is aborted by
the engine's watchdog. Either way the script ends ``failed`` with the reason
in its errors, and ``LifecycleStatistics.stop_aborts`` counts the stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from moonbus.bus import Event
from moonbus.bus.cascade import CascadeLink
from moonbus.errors import ClosedError, ScriptError, ScriptTimeout
from moonbus.host.budget import TimeoutWatch
from moonbus.host.context import ScriptContext
from moonbus.host.engine_side import STOP_TOKEN, ScriptEngine
from moonbus.host.lifecycle_task import LifecycleTask, start_poll
from moonbus.host.limits import script_delay
from moonbus.host.memory_caps import ScriptLimitCounters, clip
from moonbus.host.poll_latency import PollLatency
from moonbus.host.reporter import ScriptReporter

__all__ = ["ACTIVE", "ENDED", "LifecycleTask", "ScriptLifecycle"]

_log = logging.getLogger("moonbus.script")
_STOPPED_MESSAGE = "script stopped"
ACTIVE = ("starting", "running", "stopping")
ENDED = ("stopped", "failed")


class ScriptLifecycle:
    """The script-thread half of ``ScriptHost`` (see the module docstring)."""

    # Set by ScriptHost.__init__ (see there and host/script.py's docstring).
    name: str
    _ctx: ScriptContext
    _control: threading.RLock
    _state: threading.Lock
    _done: threading.Condition
    _runner: int | None
    _status: str
    _stop_requested: bool
    _failing: bool
    _start_ok: bool
    _next_poll: float
    _warned: set[str]
    _errors: deque[str]
    _limits: ScriptLimitCounters
    _reporter: ScriptReporter
    _event: ScriptEngine | None
    _event_released: bool
    _main: ScriptEngine | None
    _life: LifecycleTask | None
    _dtask: LifecycleTask | None
    _queue_lock: threading.Lock
    _deferred: deque[tuple[int, Event, CascadeLink]]
    polls: int
    handler_errors: int
    poll_errors: int
    _consecutive_failures: int
    _timeouts: TimeoutWatch
    quarantined: str
    _skipped_before: int
    _refused_before: int
    _calls_before: int
    _poll_latency: PollLatency

    # --------------------------------------------------------------- errors
    def _record_error(self, what: str, exc: BaseException) -> None:
        # The headline once and the script's own frames (moonbus.host.error_log).
        headline, full = self._reporter.error_text(what, exc)
        settings = self._ctx.settings  # texts are capped: a script chooses its error messages
        text = self._limits.clip(headline, settings.max_error_length, "truncated_errors")
        self._errors.append(text)
        line, _ = clip(full, settings.max_log_line)
        self._ctx.log(self.name, "host", "error", line, self._ctx.tick())
        _log.debug("script %s: %s", self.name, text)

    def _handler_error(self, what: str, exc: BaseException) -> None:
        """Counted every time; logged once per distinct error (moonbus.host.reporter)."""
        self.handler_errors += 1
        self._reporter.handler_error(what, exc)
        if isinstance(exc, ScriptTimeout):  # a handler spent its event's budget
            reason = self._timeouts.exhausted(self._ctx.settings)
            if reason is not None:
                self._quarantine(reason)

    def _quarantine(self, reason: str) -> None:
        """Stop the script as ``failed`` for exhausting its handler budget too
        often (SPEC §4b), from the thread that saw the timeout: no handler of
        it runs from now on (its budget is blocked, which also stops events
        already queued for it), its subscriptions are cancelled, and the runner
        finishes the stop (``on_stop``, status ``failed``). Takes only the
        leaf lock (``_request_stop``): the runner may be inside an emit that
        waits for this thread."""
        if self.quarantined or not self._request_stop(failing=True):
            return
        self.quarantined = reason
        for side in (self._event, self._main):
            if side is not None:
                side.budget.blocked = True
                for sub in list(side.subscriptions.values()):
                    sub.cancel()
        self._record_error("host", ScriptError(reason))
        self._ctx.scheduler.wake(self)

    def _set_status(self, status: str) -> None:
        with self._state:
            self._status = status
            self._done.notify_all()

    def _request_stop(self, *, failing: bool = False) -> bool:
        """Mark the script as stopping; False when it is not active."""
        with self._state:
            if self._status not in ACTIVE:
                return False
            self._stop_requested = True
            self._failing = self._failing or failing
            self._status = "stopping"
            return True

    def _delay(self, ms: Any, what: str) -> float:
        """Seconds for a delay the script gave (``moonbus.host.limits.script_delay``):
        clamps are counted and logged once per kind; NaN raises ``ScriptError``."""
        counters = self._ctx.counters
        try:
            seconds, note = script_delay(ms, what=what, maximum=self._ctx.settings.max_poll_delay)
        except ScriptError:
            counters.add("refused_numbers")
            raise
        if note is not None:
            counters.add("clamped_numbers")
            kind = f"{what}:{'negative' if seconds == 0 else 'large'}"
            if kind not in self._warned:
                self._warned.add(kind)
                self._ctx.log(self.name, "host", "warn", f"{note} (logged once)", self._ctx.tick())
        return seconds

    # ------------------------------------------------------------ lifecycle
    def _new_lifecycle_task(self, name: str) -> LifecycleTask | None:
        # No main engine: the chunk defined no lifecycle function (ScriptHost.start).
        main = self._main
        found = None if main is None else main.lifecycle_function(name)
        if main is None or found is None:
            return None
        func, args = found
        return LifecycleTask(name, main.engine.new_task(func), args)

    def _begin_running(self) -> None:
        with self._state:
            self._status = "stopping" if self._stop_requested else "running"
            self._done.notify_all()
        self._start_ok = True
        self._next_poll = self._ctx.scheduler.clock()

    def _step(
        self, task: LifecycleTask, *, stopping: bool, limit: float | None = None
    ) -> tuple[str, Any]:
        """Resume ``task`` once: ("sleep", seconds) | ("done", results) | ("error", exc).

        ``limit`` (what is left of the stop budget) caps the call's own limit.
        """
        main = self._main
        assert main is not None
        settings = self._ctx.settings
        own = settings.handler_timeout if task.kind == "deferred" else settings.lifecycle_timeout
        if limit is not None:
            own = limit if own is None else min(own, limit)
        if task.started:
            args: tuple[Any, ...] = (STOP_TOKEN,) if stopping else ()
            task.told = task.told or stopping
        else:
            args = task.args
            task.started = True
        main.cause = task.cause  # what a deferred handler emits counts in its cascade
        try:
            outcome, value = main.engine.step(task.coroutine, *args, limit=own)
            if outcome == "sleep":
                return "sleep", self._delay(value, "sleep")
        except (ScriptError, ClosedError) as exc:
            if not main.engine.closed:
                main.engine.drop_task(task.coroutine)
            return "error", exc.with_traceback(None)  # its frames hold Lua values (start_poll)
        finally:
            main.cause = None
        return outcome, value

    def _is_stop_error(self, exc: BaseException) -> bool:
        return isinstance(exc, ScriptError) and _STOPPED_MESSAGE in str(exc).split("\n", 1)[0]

    def run_slice(self, now: float) -> float | None:
        """Scheduler entry point: do what is due at ``now`` (see the module docstring).

        A script without a main engine (no lifecycle function) has nothing to
        run here but its stop."""
        with self._control:
            if self._status not in ACTIVE or (self._main is None and self._event is None):
                return None
            outer, self._runner = self._runner, threading.get_ident()
            try:
                return self._run_slice(now)
            finally:
                self._runner = outer

    def _run_slice(self, now: float) -> float | None:
        # Runner thread, under _control.
        if self._stop_requested:
            self._finish()
            return None
        if self._dtask is not None or self._deferred:  # (a poll-only slice: no call)
            self._run_deferred(now)
        if self._status in ("starting", "running"):
            self._run_lifecycle(now)
        if self._stop_requested or self._status in ENDED:
            if self._status not in ENDED:
                self._finish()
            return None
        return self._next_due(now)

    def _next_due(self, now: float) -> float | None:
        if self._dtask is None and self._life is None and not self._deferred:
            return self._next_poll if self._status == "running" else None  # (the usual)
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

    def _next_deferred(self) -> LifecycleTask | None:
        """The next queued deferred event as a task; None when the queue is empty
        (always without a main engine: only its subscriptions queue events)."""
        main = self._main
        if main is None:
            return None
        while True:
            with self._queue_lock:
                if not self._deferred:
                    return None
                sub_id, event, cause = self._deferred.popleft()
            try:
                coroutine, args = main.deferred_task(sub_id, event)
            except (ScriptError, TypeError) as exc:
                self._handler_error("deferred handler", exc)
                continue
            return LifecycleTask("deferred", coroutine, args, cause)

    def _run_deferred(self, now: float) -> None:
        while True:
            task = self._dtask
            if task is None:
                task = self._next_deferred()
                if task is None:
                    return
            elif task.wake_at > now:
                return
            outcome, value = self._step(task, stopping=False)
            if outcome == "sleep":
                task.wake_at = now + value
                self._dtask = task
                return
            self._dtask = None
            if outcome == "error" and not self._is_stop_error(value):
                self._handler_error("deferred handler", value)

    def _run_lifecycle(self, now: float) -> None:
        task = self._life
        value: Any  # the outcome's: seconds to sleep, results, or the error
        deadline: float | None = None  # a poll starting now: the deadline it is run for
        if task is None:
            if self._status != "running" or now < self._next_poll:
                return
            deadline = self._next_poll
            main = self._main  # None: the chunk defines no lifecycle function
            task, outcome, value = (None, "none", None) if main is None else start_poll(
                main, self._ctx.settings.lifecycle_timeout, self._delay)
            if outcome == "none":
                self._next_poll = now + 3600.0  # nothing to poll; handlers only
                return
            self._poll_latency.record(now - deadline)  # how late it starts (poll_latency.py)
            self._life = task  # None unless it sleeps: no task for a poll that ended
        elif task.wake_at > now:
            return
        else:
            outcome, value = self._step(task, stopping=False)
        if outcome == "sleep" and task is not None:
            task.wake_at = now + value
            return
        self._life = None
        if task is not None and task.kind == "on_start":
            self._after_start(outcome, value)
        else:
            self._after_poll(now, outcome, value, deadline)

    def _after_start(self, outcome: str, value: Any) -> None:
        if outcome == "error":
            self._record_error("on_start", value)
            self._close_engines()
            self._set_status("failed")
            return
        if value and value[0] is False:
            self._ctx.log(self.name, "host", "info", "on_start returned false: not started",
                          self._ctx.tick())
            self._close_engines()
            self._set_status("stopped")
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
        The delay is checked first (``_delay``: NaN fails the poll, negative
        is 0, over ``max_poll_delay`` is clamped).
        """
        settings = self._ctx.settings
        delay = value[0] if outcome == "done" and value else None
        numeric = isinstance(delay, (int, float)) and type(delay) is not bool
        seconds = settings.poll_delay
        if numeric and 0 <= delay <= settings.max_poll_delay * 1e3:  # type: ignore[operator]
            seconds = delay / 1000.0  # type: ignore[operator]  # in range: as _delay, no checks
        elif numeric:
            try:
                seconds = self._delay(delay, "poll")
            except ScriptError as exc:  # NaN: the poll failed
                outcome, value = "error", ScriptError(f"poll returned an invalid delay: {exc}")
        if outcome == "error":
            self.poll_errors += 1
            self._consecutive_failures += 1
            self._record_error("poll", value)
            if self._consecutive_failures >= settings.max_poll_failures:
                self._record_error(
                    "host",
                    ScriptError(
                        f"{self._consecutive_failures} consecutive poll failures "
                        f"(max_poll_failures): stopping"
                    ),
                )
                self._request_stop(failing=True)
            self._next_poll = now + settings.poll_delay
            return
        self.polls += 1
        self._consecutive_failures = 0
        scheduled = None if deadline is None else deadline + seconds
        self._next_poll = scheduled if scheduled is not None and scheduled > now \
            else now + seconds

    # -------------------------------------------------------------- stopping
    def _run_stopping(self, task: LifecycleTask, deadline: float) -> tuple[str, Any]:
        """Run ``task`` to its end during a stop, within the stop budget.

        ("done", results) | ("error", exc) | ("ended", ScriptError): "ended"
        means the task was not let run on (it slept again after being told
        to stop, ran past its limit, or the budget ran out) and is dropped.
        """
        main = self._main
        assert main is not None
        budget_ms = self._ctx.settings.lifecycle_timeout * 1000
        while True:
            left = deadline - time.monotonic()
            reason: str | None = None
            if left <= 0:
                reason = (f"still running when the stop budget ({budget_ms:.0f} ms, the "
                          f"lifecycle limit) ran out: ended")
            else:
                outcome, value = self._step(task, stopping=True, limit=left)
                if outcome == "error" and isinstance(value, ScriptTimeout):
                    reason = f"kept running after the stop: {value}"
                elif outcome != "sleep":
                    return outcome, value
                elif task.told:
                    reason = ("called sleep() again after 'script stopped' was raised in it "
                              "(a pcall around sleep cannot keep a stopped script running): ended")
            if reason is not None:
                if not main.engine.closed:
                    main.engine.drop_task(task.coroutine)
                return "ended", ScriptError(reason)

    def _stop_deferred(self, deadline: float) -> bool:
        """Deliver the deferred events queued before the stop; False if one had
        to be ended or the budget ran out before the queue was empty."""
        task, self._dtask = self._dtask, None
        clean = True
        while True:
            if task is None:
                if deadline <= time.monotonic():
                    with self._queue_lock:
                        left = len(self._deferred)
                        self._deferred.clear()
                    if left:
                        self._record_error("stop", ScriptError(
                            f"{left} deferred event(s) queued before the stop were not "
                            "delivered: the stop budget (lifecycle limit) ran out"))
                        clean = False
                    return clean
                task = self._next_deferred()
                if task is None:
                    return clean
            outcome, value = self._run_stopping(task, deadline)
            task = None
            if outcome == "ended":
                self._handler_error("deferred handler", value)
                clean = False
            elif outcome == "error" and not self._is_stop_error(value):
                self._handler_error("deferred handler", value)

    def _finish(self) -> None:
        """Stop now: end the sleeping task, deliver queued deferred events, run
        on_stop, all within one stop budget (see the module docstring)."""
        deadline = time.monotonic() + self._ctx.settings.lifecycle_timeout
        with self._state:
            failed = self._failing
            self._status = "stopping"
        ended = False
        for side in (self._event, self._main):
            if side is not None:
                for sub in list(side.subscriptions.values()):
                    sub.cancel()
        life, self._life = self._life, None
        if life is not None and life.started:
            outcome, value = self._run_stopping(life, deadline)
            if outcome == "ended":
                self._record_error(life.kind, value)
                ended = failed = True
            elif outcome == "error" and not self._is_stop_error(value):
                self._record_error(life.kind, value)
                if life.kind == "on_start":
                    self._start_ok = False
                    failed = True
        if not self._stop_deferred(deadline):
            ended = failed = True
        task = self._new_lifecycle_task("on_stop") if self._start_ok else None
        if task is not None:
            outcome, value = self._run_stopping(task, deadline)
            if outcome == "ended":
                self._record_error("on_stop", value)
                ended = failed = True
            elif outcome == "error" and not self._is_stop_error(value):
                self._record_error("on_stop", value)
        if ended:
            self._ctx.counters.add("stop_aborts")
        self._close_engines()
        self._set_status("failed" if failed else "stopped")

    def _close_engines(self) -> None:
        with self._state:  # no event engine is made again from now (event_on_demand.py)
            self._event_released = False
        for side in (self._event, self._main):
            if side is not None:
                self._skipped_before += int(side.budget.skipped)
                self._calls_before += int(side.budget.calls)
                self._refused_before += side.handlers_refused
                side.close()
        self._event = None
        self._main = None
        self._ctx.scheduler.remove(self)
        with self._state:
            self._done.notify_all()
