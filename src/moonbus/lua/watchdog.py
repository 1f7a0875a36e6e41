"""One thread that aborts Lua calls which use more than their CPU-time budget.

Why a watchdog instead of a count hook: a per-instruction ``debug.sethook``
count hook roughly doubles the run time of pure-Lua code. Lua documents
``lua_sethook`` as safe to call asynchronously, so the watchdog does nothing
to a running call until its budget is spent and only then installs a count
hook (count 1) that raises on the next instruction, in every Lua thread of the
call (see ``LuaEngine.abort``). A call that finishes in time pays a dict store,
a dict pop and a clock read.

CPU time, not wall time: a call's thread may wait for the GIL (another thread
runs Python) or inside a host API; that waiting must not count, or a busy host
would abort well-behaved handlers. An armed entry records the wall-clock start
and the thread's native id. When the wall-clock budget has passed, the
watchdog reads that thread's CPU clock (Linux: the per-thread CPU clock id
made from the thread id, as glibc's ``pthread_getcpuclockid`` does; reading a
finished thread's clock fails cleanly with ``EINVAL``). The first time it sees
an entry it samples the thread's CPU time; past the wall-clock budget it
charges the call with the CPU time used since that sample plus at most one
scan period for the time before it, and aborts only when that reaches the
budget. Where per-thread CPU clocks are unavailable, wall time is used.

A C delivery arms a ``WatchSlot`` instead of a tuple: one engine call may run
a batch of events, each with its own start and number (``gen``), which the
Lua loop advances without the GIL. The watchdog reads a consistent snapshot,
keys its CPU samples by event, and claims the event (compare-and-swap) before
aborting; a claimed event cannot be left for the next, so the abort can only
hit the handler it judged.

Threads: the engine running a call writes its entry (``armed``) and pops it;
the watchdog's own thread reads the table and calls ``Abortable.abort``. Once
nothing has been armed at ``linger`` scans in a row (default 25, 50 ms) the
thread sleeps on an event, so an idle runtime costs nothing. Why it lingers:
short calls arm and disarm thousands of times a second (10,000 polls/s);
a thread that went to sleep whenever the table was empty at a scan had to
be woken (an ``Event.set``, a thread switch, the GIL) by nearly every call,
about 20 µs of CPU per call; a scan of an empty table every ``period`` is
a few µs. Precision is ``period`` (default 2 ms).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Abortable", "WatchSlot", "Watchdog", "thread_cpu_time"]


class Abortable(Protocol):
    """What the watchdog can abort: an engine in the middle of a call."""

    def abort(self, token: int, reason: str) -> bool: ...


def thread_cpu_time(native_id: int) -> float | None:
    """CPU seconds used so far by the thread with this native id (None if unknown)."""
    try:
        return time.clock_gettime(((~native_id) << 3) | 6)  # CPUCLOCK_SCHED, per thread
    except (OSError, OverflowError, AttributeError):
        return None


class WatchSlot(Protocol):
    """The armed entry of a C delivery (``moonbus.lua._fastcall.WatchSlot``):
    one engine call may run several events, each with its own start. The
    watchdog reads it with ``snapshot`` and claims the event it judged before
    aborting, so an abort meant for one event never hits the next."""

    def snapshot(self) -> tuple[float, float, int, int, int] | None: ...

    def claim(self, gen: int) -> bool: ...


# An armed entry: (wall start, budget seconds, call token, native thread id),
# or a C delivery's WatchSlot.
Entry = tuple[float, float, int, int] | WatchSlot


class Watchdog:
    """Fires ``abort(token, "timeout")`` on armed calls that spent their CPU budget."""

    def __init__(
        self,
        *,
        period: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[int], float | None] = thread_cpu_time,
        name: str = "moonbus-watchdog",
        linger: int = 25,
    ) -> None:
        self._period = period
        self._linger = linger
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._armed: dict[Abortable, Entry] = {}
        # (target, token, event number or None) -> (CPU time at first sight,
        # wall time at first sight)
        self._samples: dict[tuple[Abortable, int, int | None], tuple[float, float]] = {}
        self._wake = threading.Event()
        # True while the thread waits for something to be armed. A plain
        # attribute, read on every armed call (a property costs ~80 ns there).
        self.idle = False
        self._stop = False
        self._fired = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def armed(self) -> dict[Abortable, Entry]:
        """The armed table itself, for hot paths that arm inline (see ``LuaEngine``):
        ``armed[target] = (start, budget, token, threading.get_native_id())`` then
        ``if watchdog.idle: watchdog.wake()``."""
        return self._armed

    def wake(self) -> None:
        """Wake the thread after arming inline."""
        self._wake.set()

    def arm(self, target: Abortable, budget: float, token: int) -> None:
        """Watch ``target``'s call ``token`` (running on this thread) until ``disarm``;
        abort it once it has used ``budget`` seconds of CPU time."""
        self._armed[target] = (self._clock(), budget, token, threading.get_native_id())
        if self.idle:
            self._wake.set()

    def disarm(self, target: Abortable) -> None:
        """Stop watching ``target`` (its call ended)."""
        self._armed.pop(target, None)

    @property
    def fired(self) -> int:
        """How many calls the watchdog aborted."""
        return self._fired

    def _run(self) -> None:
        empty = 0  # scans in a row that found nothing armed
        while not self._stop:
            if self._armed:
                empty = 0
            elif empty < self._linger:
                empty += 1  # calls come and go: look again next period (module docstring)
            else:
                # Order matters: publish "idle" before the last look at _armed, so an
                # arm() racing with it either is seen here or sees idle and wakes us.
                self.idle = True
                self._wake.clear()
                if not self._armed:
                    self._samples.clear()
                    self._wake.wait()
                self.idle = False
                empty = 0
                continue
            time.sleep(self._period)
            self._scan(self._clock())

    def _scan(self, now: float) -> None:
        live: set[tuple[Abortable, int, int | None]] = set()
        for target, entry in list(self._armed.items()):
            slot: WatchSlot | None = None
            gen: int | None = None
            if isinstance(entry, tuple):
                start, budget, token, native_id = entry
            else:  # a C delivery's slot: one engine call may run several events
                slot = entry
                snapshot = entry.snapshot()
                if snapshot is None:
                    continue  # the running event is changing: judge it next scan
                start, budget, token, native_id, gen = snapshot
            key = (target, token, gen)
            live.add(key)
            sample = self._samples.get(key)
            if sample is None:
                cpu = self._cpu_clock(native_id)
                if cpu is not None:
                    self._samples[key] = sample = (cpu, now)
            if now - start < budget:
                continue
            if sample is not None:
                cpu = self._cpu_clock(native_id)
                if cpu is not None:
                    # Before the first sample the call's CPU time is unknown. It
                    # is charged as at most one scan period: normally the sample
                    # comes within a period, so this is exact enough; when this
                    # thread was itself starved of the GIL, the call most likely
                    # was too, and charging that wait as CPU would abort a
                    # well-behaved call. A call that really computes is stopped
                    # at most one budget after the sample.
                    before = min(sample[1] - start, self._period)
                    used = before + (cpu - sample[0])
                    if used < budget:
                        continue  # waited (GIL, I/O), did not compute: not yet
            if slot is not None and gen is not None and not slot.claim(gen):
                continue  # that event finished meanwhile; the next one has its own start
            if target.abort(token, "timeout"):
                self._fired += 1
        for key in [k for k in self._samples if k not in live]:
            del self._samples[key]

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
