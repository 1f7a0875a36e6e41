"""Deferred delivery's queue in Python, and the pacing rules both queues follow.

``PyEventQueue`` is the reference for ``_fastcall.EventQueue`` (C), which
does the same without a Python frame per event; ``moonbus.host.deferred``
uses whichever is built and explains why pacing exists. Kept apart from
``deferred.py`` so that the rules (when an emit waits, when it does not)
read in one place, next to their constants.

Threads: ``push`` and ``pace`` run on emitting threads (GIL held), ``drain``
on the event thread (or whoever runs ``run_pending``), as in C; so do
``host_enter``/``host_leave`` (around a script's calls into Python, GIL held;
only the event thread's count). The estimate of what a delivery costs
(``_PaceCost``) is read and updated by emitting threads only; it reads the
event thread's CPU clock from outside, and its wall time in host calls.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from moonbus.bus import Event

__all__ = ["PACE_CHEAP_DIV", "PACE_GIVE_UP", "PACE_RING", "PACE_SAMPLE", "PyEventQueue",
           "Target"]

# A waiting emit stops waiting when the event thread finishes nothing for this
# many times deferred_max_lag, GIL free (as PACE_GIVE_UP in _fastcall.c).
PACE_GIVE_UP = 20
# Push times kept for pacing (PACE_RING in _fastcall.c): more entries than
# this outstanding count as late.
PACE_RING = 4096
# A delivery is cheap when it costs the event thread at most deferred_max_lag /
# PACE_CHEAP_DIV (CPU time plus wall time in host calls, as in _fastcall.c):
# several then fit in the lag.
PACE_CHEAP_DIV = 4
# The cost estimate's window: this many deliveries, or this many times the
# cheap cost in CPU time, whichever comes first (PACE_SAMPLE in C).
PACE_SAMPLE = 16

# One delivery target: ``target(sub_id, event)``.
Target = Callable[[int, Event], None]


class _PaceCost:
    """What one delivery costs the event thread: CPU time inside drains plus
    wall time inside host calls while an emit waited for it (``pace_costly``
    in _fastcall.c, same rules;
    ``PyEventQueue._drain_cost_ns``): that cost over the deliveries
    finished in a window that closes after PACE_SAMPLE deliveries or
    PACE_SAMPLE x cheap of CPU (a handler still running closes it alone, as
    one delivery). Unmeasurable (no event thread, no CPU clock): cheap."""

    __slots__ = ("clock", "cost", "cpu_mark", "fin_mark", "host")

    def __init__(self, owner: int) -> None:
        self.clock: int | None = None
        if owner:
            try:
                self.clock = time.pthread_getcpuclockid(owner)
            except (AttributeError, OSError):  # not POSIX, or the thread is gone
                self.clock = None
        self.cpu_mark = self.fin_mark = 0
        self.cost = 0  # ns per delivery, last estimate
        self.host = 0  # host-call wall time seen during waits (drain_cost_ns in C)

    def now(self) -> int | None:
        """The event thread's CPU clock (None: unreadable)."""
        if self.clock is None:
            return None
        try:
            return time.clock_gettime_ns(self.clock)
        except OSError:
            return None

    def costly(self, cpu: int | None, finished: int, cheap: int) -> bool:
        """``cpu``: the event thread's cost so far (None: unknown): CPU inside
        drains plus wall time in host calls during waits."""
        if cpu is None:
            return False
        n, used = finished - self.fin_mark, cpu - self.cpu_mark
        if n >= PACE_SAMPLE or used >= PACE_SAMPLE * cheap:
            self.cost, self.cpu_mark, self.fin_mark = used // max(n, 1), cpu, finished
        return self.cost > cheap


class PyEventQueue:
    """The queue in Python: the reference for ``_fastcall.EventQueue`` (C),
    which does the same without a Python frame per event and runs each run
    of events for one C ``Delivery`` in one Lua call."""

    def __init__(self, *, notify: Callable[[], None],
                 report: Callable[[Any, BaseException], None]) -> None:
        self._entries: deque[tuple[Target, int, Event]] = deque()
        self._notify = notify
        self._report = report
        self.sleeping = False
        # Pacing (see the module docstring and _fastcall.c's queue_pace):
        # pushed under the GIL by emitting threads, finished by the drainer.
        self._pushed = self._finished = 0
        self._progress = threading.Condition(threading.Lock())
        self._waiting = 0  # emitting threads waiting on _progress
        self.max_lag = 0.0  # seconds; 0: pacing off
        # The bound (see EventQueue.max_size): a push past it is dropped, counted.
        self.max_size = 0  # 0: none
        self._dropped = self._peak = 0
        self._owner = 0  # the event thread's ident: never paced
        self._cost = _PaceCost(0)
        # The event thread's CPU inside drain() (see drain_cpu_ns in C): the
        # total of finished drains, and its clock when the running one began.
        self._drain_cpu = 0
        self._drain_start: int | None = None
        self._drain_start_wall = 0  # monotonic_ns() at that start
        self._drain_depth = 0
        # The event thread's wall time inside host calls during drains (see
        # host_enter, host_ns in C): the total of finished calls, and
        # monotonic_ns() when the outermost running one began.
        self._host_ns = 0
        self._host_start: int | None = None
        self._host_depth = 0
        self._pushed_at = [0.0] * PACE_RING  # entry k was queued at [k % PACE_RING]
        self._gave_up_at = -1
        self._counts = [0, 0.0, 0, 0]  # waits, seconds waited, given up, declined

    @property
    def owner(self) -> int:
        """The event thread's ident: never paced; its CPU clock prices deliveries."""
        return self._owner

    @owner.setter
    def owner(self, ident: int) -> None:
        self._owner = ident
        self._cost = cost = _PaceCost(ident)
        cost.cpu_mark, cost.fin_mark = self._drain_cost_ns(cost, 0) or 0, self._finished

    def handler(self, target: Target, sub_id: int) -> Callable[[Event], None]:
        return functools.partial(self.push, target, sub_id)

    def push(self, target: Target, sub_id: int, event: Event) -> None:
        size = len(self._entries)
        if 0 < self.max_size <= size:
            self._dropped += 1  # not queued, not counted as pushed (pacing ignores it)
            return
        self._peak = max(self._peak, size + 1)
        self._entries.append((target, sub_id, event))
        if self.max_lag > 0:
            self._pushed_at[self._pushed % PACE_RING] = time.monotonic()
        self._pushed += 1
        if self.sleeping:
            self.sleeping = False
            self._notify()

    @property
    def bound_counts(self) -> tuple[int, int]:
        """(pushes dropped at ``max_size``, most entries ever queued at once)."""
        return self._dropped, self._peak

    def __len__(self) -> int:
        return len(self._entries)

    def head_seq(self) -> int | None:
        """The seq of the oldest queued event (None: empty)."""
        entries = self._entries
        return entries[0][2].seq if entries else None

    def drain(self, limit: int) -> int:
        measured = self._owner != 0 and threading.get_ident() == self._owner
        outer = measured and self._drain_depth == 0
        if measured:
            self._drain_depth += 1
        start = time.thread_time_ns() if outer else 0
        if outer:
            self._drain_start_wall = time.monotonic_ns()
            self._drain_start = start
        try:
            entries = self._entries
            taken = [entries.popleft() for _ in range(min(limit, len(entries)))]
            for target, sub_id, event in taken:
                try:
                    target(sub_id, event)
                except Exception as exc:  # delivery reports script errors itself
                    self._report(target, exc)
                self._finished += 1
                if self._waiting:
                    with self._progress:
                        self._progress.notify_all()
            return len(taken)
        finally:
            if measured:
                self._drain_depth -= 1
            if outer:
                self._drain_start = None  # first: a reader in between undercounts
                self._drain_cpu += time.thread_time_ns() - start

    def host_enter(self) -> None:
        """A script's call into Python begins (``moonbus.lua.boundary.detached``,
        GIL held): on the event thread inside a drain, the outermost call's
        wall time counts as delivery cost (``host_enter`` in C says why)."""
        if self._drain_depth and threading.get_ident() == self._owner:
            self._host_depth += 1
            if self._host_depth == 1:
                self._host_start = time.monotonic_ns()

    def host_leave(self) -> None:
        """That call returned or raised."""
        if self._host_depth and threading.get_ident() == self._owner:
            self._host_depth -= 1
            start = self._host_start
            if not self._host_depth and start is not None:
                self._host_start = None  # first: a reader in between undercounts
                self._host_ns += max(0, time.monotonic_ns() - start)

    def _host_wait_ns(self) -> int:
        """The event thread's wall time in host calls so far, the running one included."""
        total, start = self._host_ns, self._host_start
        if start is None:
            return total
        now = time.monotonic_ns()
        return total if self._host_ns != total or now < start else total + now - start

    def _drain_cost_ns(self, cost: _PaceCost, young: int, waiting: int = 0) -> int | None:
        """What deliveries cost so far (``drain_cost_ns`` in C says why): the
        event thread's CPU inside drains plus its wall time inside host calls
        while an emit waited (``cost.host``, and ``waiting``: the running wait's)."""
        cpu = self._drain_cpu_ns(young)
        return None if cpu is None else cpu + cost.host + max(0, waiting)

    def _drain_cpu_ns(self, young: int) -> int | None:
        """The event thread's CPU inside drains so far; the running one once it
        has run ``young`` ns of wall time (``drain_cpu_ns`` in C says why)."""
        total, start = self._drain_cpu, self._drain_start
        if start is None or time.monotonic_ns() - self._drain_start_wall < young:
            return total
        now = self._cost.now()
        if now is None:
            return None
        return total if self._drain_cpu != total or now < start else total + now - start

    def pace(self) -> None:
        """The reference for ``EventQueue.pace`` (same rules, see ``moonbus.host.deferred``)."""
        lag, finished, pushed = self.max_lag, self._finished, self._pushed
        if lag <= 0 or finished >= pushed or finished == self._gave_up_at:
            return
        if self._owner and threading.get_ident() == self._owner:
            return
        now = time.monotonic()
        # the oldest entry not yet delivered (entries end in queue order)
        queued_at = 0.0 if pushed - finished > PACE_RING else self._pushed_at[
            finished % PACE_RING]
        if now - queued_at < lag:
            return
        counts, cost = self._counts, self._cost
        cheap = int(lag * 1e9) // PACE_CHEAP_DIV
        if cost.costly(self._drain_cost_ns(cost, PACE_SAMPLE * cheap), finished, cheap):
            counts[3] += 1  # waiting would hold the host to the handlers' rate
            return
        target, gave_up, patience = self._pushed, 0, lag * PACE_GIVE_UP
        host0 = self._host_wait_ns()  # the event thread's host calls from here on count
        with self._progress:
            self._waiting += 1
            last, slice_end = self._finished, now + patience
            while last < target:
                # wake now and then to see whether deliveries turned costly (a
                # running handler closes a window after PACE_SAMPLE x cheap of CPU)
                self._progress.wait(max(0.0, min(PACE_SAMPLE * cheap / 1e9,
                                                 slice_end - time.monotonic())))
                current, moment = self._finished, time.monotonic()
                seen = self._host_wait_ns() - host0
                if cost.costly(self._drain_cost_ns(cost, PACE_SAMPLE * cheap, seen), current,
                               cheap):
                    gave_up = 2
                    break
                if current != last:
                    last, slice_end = current, moment + patience
                elif moment >= slice_end:
                    gave_up = 1
                    break
            self._waiting -= 1
        cost.host += max(0, self._host_wait_ns() - host0)
        end = time.monotonic()
        counts[0] += 1
        counts[1] += end - now
        if gave_up:
            counts[2] += 1
        if gave_up == 1:  # (costly: the estimate keeps the next emits from waiting)
            self._gave_up_at = self._finished

    def pace_counts(self) -> tuple[int, float, int, int, int, float, float]:
        """(waits, seconds waited, waits given up, deliveries not yet finished,
        late emits not paced because deliveries are costly, seconds of cost per
        delivery: the last estimate, seconds the event thread spent in host calls)."""
        waits, seconds, gave_up, declined = self._counts
        return (int(waits), float(seconds), int(gave_up), self._pushed - self._finished,
                int(declined), self._cost.cost / 1e9, self._host_wait_ns() / 1e9)
