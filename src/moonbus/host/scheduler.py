"""Drives the main engines of many scripts with few threads.

A script's main engine never owns an OS thread. Its work (``on_start``,
each ``poll``, deferred handlers, ``on_stop``) runs in Lua coroutines that
yield when the script calls ``sleep``; the script tells the scheduler when it
next has work (``run_slice`` returns a due time) and the scheduler calls it
again then, or earlier when it is woken (a deferred event arrived, a stop was
asked). So 1,000 sleeping scripts cost 1,000 heap entries, not 1,000 threads.

Two modes, chosen by the owner:

* threaded (``start(workers)``): worker threads wait on a condition for the
  earliest due entry and run it. A script is run by at most one worker at a
  time (``_busy``); a wake that arrives while it runs is kept and honoured
  when the slice ends.
* stepped (``run_due(now)``): the caller's thread runs every entry due at
  ``now`` once, in (due time, scheduling order) order. With a virtual clock
  this makes a whole run deterministic (``moonbus run --tick-ms 0``).

Workers are woken only when a new entry becomes the earliest (the others
already wait for an earlier time), or for ``wait_idle``: a notify per slice
woke the other worker for nothing thousands of times a second.

``assist_lag`` (2 ms by default) and ``parallel_slice`` (0.5 ms): while one
worker runs a slice, another starts one only when that slice has run for
``assist_lag`` already (it is stuck: long Lua code, a host API that blocks,
or its thread lost the CPU), or when the schedule is ``assist_lag`` behind
*and* slices take ``parallel_slice`` or more on average (an exponential
average kept in ``_finish``), that is when they are mostly Lua, which runs
without the GIL. Why: a short slice is mostly Python (the scheduler, the
guarded call, the host API a poll calls), so two workers running short
slices side by side do not run in parallel, they hand the GIL to each other
at every Lua call and host call. Measured with 10,000 scripts polling once
a second on this 2-core VM (quiet): both workers free, 73-77 % of the due
polls ran and each cost 155 us of CPU; one worker at a time (this rule),
96-100 % ran at 83-100 us each. The earlier rule joined whenever the
schedule was behind, which is always under that load: it ran 60-68 %.
``assist_lag=0`` lets every worker take due work at once (the old default).
``statistics().assists`` counts slices started beside another.

``timer_slack`` (2 ms by default): a worker with nothing due sleeps until
the earliest due time *plus* the slack, so every task due within the slack
after it runs in the same wake-up, never before its due time (it runs at
``max(now, due)`` as usual, at most the slack late). Why: each sleep and
wake-up of a worker costs tens of microseconds of CPU on a VM (futex, timer,
context switch), and with 10,000 scripts polling once a second a wake-up
per poll was a third of each poll's cost (measured, one worker, 3,000
scripts: 139 us of CPU per poll without slack, 95 us with 2 ms; 10,000
scripts: 60 % of the due polls ran in time without it, 71 % with it). The
same idea as Linux's timer slack. ``statistics().waits`` counts the sleeps.

Due times are floats, and a host's frame times and a script's deadlines are
sums of inexact binary fractions (1/60 s, 0.1 s): the frame meant to be "the
6th after a 100 ms deadline" can read an ulp earlier than the deadline. So a
task counts as due when its due time is at most ``due_tolerance`` (1 µs by
default, far below any frame or poll delay, far above float error for clocks
below ~10^9 s) after ``now``, and such a task is run *at its due time*
(``run_slice(due)``), so a script that keeps a fixed schedule from its
deadlines (``ScriptHost``: next poll = deadline + delay) stays on it exactly.

No worker ever dies of a job: an exception from one ``run_slice`` is logged
and counted (``job_exceptions``) and the worker goes on with the next; an
error in the worker's own loop is logged and counted (``worker_errors``) and
the loop goes on. Due times are checked where they enter (NaN and infinity
never reach the heap, see ``_sane``) and a worker's wait is cut into pieces
of at most ``_MAX_WAIT``, so no delay overflows ``Condition.wait``.

Threads: ``schedule``, ``wake``, ``remove``, ``statistics`` from any thread;
``run_due`` by the stepping thread; ``close`` by the owner (it joins the
workers against one deadline and counts those that did not end).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from moonbus.host.gate import DeliveryGate

__all__ = ["Schedulable", "SchedulerStatistics", "ScriptScheduler"]

_log = logging.getLogger("moonbus.scheduler")
# Longest single Condition.wait of a worker (seconds): far below
# threading.TIMEOUT_MAX; a worker that wakes early just looks again.
_MAX_WAIT = 60.0


@dataclass(frozen=True)
class SchedulerStatistics:
    """A snapshot of the scheduler (``ScriptScheduler.statistics``)."""

    workers: int  # worker threads started
    workers_alive: int  # of those, still running
    pending: int  # tasks with a pending run
    job_exceptions: int  # run_slice calls that raised (logged; the worker went on)
    worker_errors: int  # errors in a worker's own loop (logged; the worker went on)
    bad_due_times: int  # NaN or infinite due times turned into "now" / "when woken"
    threads_not_ended: int  # workers still alive after close()'s timed join
    assists: int = 0  # slices started beside another worker's (assist_lag, parallel_slice)
    waits: int = 0  # times a worker went to sleep (each costs a wake-up: see timer_slack)


class Schedulable(Protocol):
    """Something with work to do at times it chooses."""

    def run_slice(self, now: float) -> float | None:
        """Do the work due at ``now``; return when to be called next (None = only when woken)."""
        ...


class ScriptScheduler:
    """A timer heap of schedulables, run by worker threads or stepped by the caller."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        gate: DeliveryGate | None = None,
        due_tolerance: float = 1e-6,
        assist_lag: float = 0.002,
        parallel_slice: float = 0.0005,
        timer_slack: float = 0.002,
    ) -> None:
        if not 0.0 <= due_tolerance < 0.001:
            raise ValueError(f"due_tolerance must be in [0, 0.001) seconds, got {due_tolerance}")
        if not 0.0 <= assist_lag <= 1.0:
            raise ValueError(f"assist_lag must be in [0, 1] seconds, got {assist_lag}")
        if not 0.0 <= parallel_slice <= 1.0:
            raise ValueError(f"parallel_slice must be in [0, 1] seconds, got {parallel_slice}")
        if not 0.0 <= timer_slack <= 0.05:
            raise ValueError(f"timer_slack must be in [0, 0.05] seconds, got {timer_slack}")
        self.clock = clock
        self.due_tolerance = due_tolerance
        self.assist_lag = assist_lag
        self.parallel_slice = parallel_slice
        # Under _lock: the average length of a slice (seconds, exponential,
        # real time): long slices are mostly Lua (see the module docstring).
        self._slice_average = 0.0
        self.timer_slack = timer_slack
        self._gate = gate
        # Held with ``with self._lock`` (a C lock's own enter/exit), not
        # ``with self._cond``: Condition's __enter__/__exit__ are Python
        # functions, two frames per use, and a poll takes it three times.
        # The condition is built on it, so wait/notify work under it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Schedulable]] = []
        self._due: dict[Schedulable, float] = {}
        self._busy: set[Schedulable] = set()
        self._rerun: dict[Schedulable, float] = {}
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        # Worker thread ident -> when its running slice started (threaded mode).
        self._running: dict[int, float] = {}
        # Worker thread ident -> the due time it waits for, while its wait is
        # timed on the heap, not on another worker's fresh slice (see _push).
        self._idle_until: dict[int, float] = {}
        self._idle_waiters = 0  # threads in wait_idle: woken by every _finish
        # Counters, under _lock.
        self._job_exceptions = 0
        self._worker_errors = 0
        self._bad_due = 0
        self._not_ended = 0
        self._assists = 0
        self._waits = 0

    @property
    def threaded(self) -> bool:
        """True when worker threads run the schedule."""
        return bool(self._threads)

    def schedule(self, task: Schedulable, due: float) -> None:
        """Run ``task`` at ``due`` (the earliest of several requests wins)."""
        with self._lock:
            if self._closed:
                return
            sane = self._sane(due)
            if sane is None:
                return
            due = sane
            if task in self._busy:
                previous = self._rerun.get(task)
                self._rerun[task] = due if previous is None else min(previous, due)
                return
            current = self._due.get(task)
            if current is not None and current <= due:
                return
            self._due[task] = due
            self._push(task, due)

    def _push(self, task: Schedulable, due: float) -> None:
        # Under _lock. Waiting workers timed their wait on the earliest entry:
        # only a new earliest one needs to wake one of them.
        # A worker whose wait is timed on the heap (``_idle_until``; also one
        # waiting beside a fresh slice for a later entry) may have timed it on
        # an entry that is gone now (the heap was empty, or another worker
        # took it): it is woken for anything earlier.
        heap = self._heap
        idle = self._idle_until
        if not heap or due < heap[0][0] or (idle and due < max(idle.values())):
            self._cond.notify()
        heapq.heappush(heap, (due, next(self._order), task))

    def _sane(self, due: float | None) -> float | None:
        # Under _lock. The hosts check delays from scripts (moonbus.host.limits);
        # this keeps a bug elsewhere from breaking the heap's order (NaN) or a
        # worker's wait (infinity): NaN and -inf run now, +inf only when woken.
        if due is None or math.isfinite(due):
            return due
        self._bad_due += 1
        _log.error("scheduler: due time %r is not a finite number", due)
        return None if due > 0 else self.clock()

    def wake(self, task: Schedulable) -> None:
        """Run ``task`` as soon as possible."""
        self.schedule(task, self.clock())

    def remove(self, task: Schedulable) -> None:
        """Forget every pending run of ``task``."""
        with self._lock:
            self._due.pop(task, None)
            self._rerun.pop(task, None)

    def pending(self) -> int:
        """How many tasks have a pending run."""
        with self._lock:
            return len(self._due)

    def next_due(self) -> float | None:
        """The earliest pending due time, or None."""
        with self._lock:
            self._discard_stale()
            return self._heap[0][0] if self._heap else None

    def _discard_stale(self) -> None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    def _pop_due(self, now: float) -> tuple[Schedulable, float] | None:
        """The next task due at ``now`` (within the tolerance) and the time it runs at."""
        self._discard_stale()
        if not self._heap or self._heap[0][0] > now + self.due_tolerance:
            return None
        due, _, task = heapq.heappop(self._heap)
        del self._due[task]
        self._busy.add(task)
        return task, max(now, due)

    def _finish(self, task: Schedulable, next_due: float | None) -> None:
        with self._lock:
            self._busy.discard(task)
            rerun = self._rerun.pop(task, None)
            if next_due is not None and not math.isfinite(next_due):
                next_due = self._sane(next_due)
            if rerun is not None:
                next_due = rerun if next_due is None else min(next_due, rerun)
            if next_due is not None and not self._closed:
                self._due[task] = next_due
                self._push(task, next_due)
            if self._idle_waiters or self._closed:
                self._cond.notify_all()

    def _run_one(self, task: Schedulable, now: float) -> None:
        next_due: float | None = None
        try:
            next_due = task.run_slice(now)
        except Exception:  # a bug in the host, not in the script: keep serving others
            _log.exception("scheduler task %r failed", task)
            with self._lock:
                self._job_exceptions += 1
        finally:
            self._finish(task, next_due)

    # ------------------------------------------------------------- stepped mode
    def run_due(self, now: float | None = None) -> int:
        """Run, on this thread, every task due at ``now`` once; returns how many ran."""
        now = self.clock() if now is None else now
        batch: list[tuple[Schedulable, float]] = []
        with self._lock:
            while True:
                popped = self._pop_due(now)
                if popped is None:
                    break
                batch.append(popped)
        for task, at in batch:
            self._run_one(task, at)
        return len(batch)

    # ------------------------------------------------------------ threaded mode
    def start(self, workers: int = 4) -> None:
        """Start ``workers`` threads that run tasks when they are due."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        with self._lock:
            if self._threads:
                return
            for i in range(workers):
                thread = threading.Thread(
                    target=self._worker, name=f"moonbus-script-{i}", daemon=True
                )
                self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def _worker(self) -> None:
        while not self._closed:
            try:
                self._work_once()
            except Exception:  # never let one bad turn end a worker
                _log.exception("scheduler worker %s: error in its loop",
                               threading.current_thread().name)
                with self._lock:
                    self._worker_errors += 1
                    if not self._closed:
                        self._cond.wait(0.01)  # do not spin if the error repeats

    def _work_once(self) -> None:
        gate = self._gate
        if gate is not None and gate.active:  # (hold() looks too: no call when idle)
            gate.hold()  # event handlers first (see moonbus.host.gate)
        me = threading.get_ident()
        with self._lock:
            while True:
                if self._closed:
                    return
                now = self.clock()
                self._discard_stale()
                wait_until = self._heap[0][0] if self._heap else now + _MAX_WAIT
                fresh = self._fresh_since(now)
                # Timed on the heap (not on a fresh slice): woken by _push for
                # anything earlier, as the entry it waits for may go.
                watch = True
                if fresh is not None:
                    lag = self.assist_lag
                    if (self._heap and now - wait_until >= lag
                            and self._slice_average >= self.parallel_slice):
                        fresh = None  # behind on long (mostly Lua) slices: run beside it
                    else:
                        # It takes the due work itself; look again when its
                        # slice would be stuck (module docstring).
                        watch = wait_until >= fresh + lag
                        wait_until = max(wait_until, fresh + lag)
                if fresh is None:
                    popped = self._pop_due(now)
                    if popped is not None:
                        task, at = popped
                        if self._running:
                            self._assists += 1
                        self._running[me] = now
                        break
                # Timer slack: sleep past the earliest due time by up to
                # timer_slack, so the tasks due soon after it run in the same
                # wake-up (see the module docstring); never run early.
                self._waits += 1
                if watch:
                    self._idle_until[me] = wait_until
                self._cond.wait(min(max(wait_until - now, 0.0) + self.timer_slack, _MAX_WAIT))
                self._idle_until.pop(me, None)
                if gate is not None and gate.active:
                    return  # the bus delivers: hold off first, like between slices
        started = time.monotonic()
        try:
            self._run_one(task, at)
        finally:
            with self._lock:  # a helper waiting on this slice looks again at its timeout
                self._running.pop(me, None)
                self._slice_average += (time.monotonic() - started - self._slice_average) * 0.1

    def _fresh_since(self, now: float) -> float | None:
        # Under _lock: the start of the earliest slice still fresh (started
        # less than assist_lag ago) on another worker, or None.
        running = self._running
        if not running:
            return None  # (the usual case: no list made per slice)
        lag = self.assist_lag
        starts = [t for t in running.values() if now - t < lag]
        return min(starts) if starts else None

    def wait_idle(self, task: Schedulable, timeout: float | None = None) -> bool:
        """Block until ``task`` is not being run by a worker (True) or timeout."""
        with self._lock:
            self._idle_waiters += 1
            try:
                return self._cond.wait_for(lambda: task not in self._busy, timeout)
            finally:
                self._idle_waiters -= 1

    def statistics(self) -> SchedulerStatistics:
        """Counters and a snapshot of the workers (any thread)."""
        with self._lock:
            return SchedulerStatistics(
                workers=len(self._threads),
                workers_alive=sum(t.is_alive() for t in self._threads),
                pending=len(self._due),
                job_exceptions=self._job_exceptions,
                worker_errors=self._worker_errors,
                bad_due_times=self._bad_due,
                threads_not_ended=self._not_ended,
                assists=self._assists,
                waits=self._waits,
            )

    def close(self, timeout: float = 10.0) -> int:
        """Stop the workers (after their current slice) and drop the schedule.

        Joins the workers against one deadline ``timeout`` seconds away and
        returns how many did not end by then (logged and counted in
        ``threads_not_ended``; they are daemon threads and end with their slice).
        """
        with self._lock:
            self._closed = True
            self._heap.clear()
            self._due.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        alive: list[str] = []
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    alive.append(thread.name)
        if alive:
            _log.warning("scheduler: %d worker(s) still running %.1f s after close: %s",
                         len(alive), timeout, ", ".join(alive))
            with self._lock:
                self._not_ended += len(alive)
        return len(alive)
