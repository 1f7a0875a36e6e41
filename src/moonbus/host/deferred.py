"""Deferred event delivery: event-engine handlers run on an event thread, in batches.

Why: with the default, *immediate* delivery (SPEC §4), ``bus.emit`` runs
every event-engine handler before it returns, one Lua call per handler on
the emitting thread. That is the right default (the host knows the scripts
have reacted when ``emit`` returns), but a host that emits a firehose of
facts (positions, actions, chat at 100k+ events/s) pays a whole guarded Lua
call per event on its own thread. ``Runtime(event_delivery="deferred")``
is the other choice Roblox offers as ``SignalBehavior.Deferred``: ``emit``
commits the event (seq, log, store) and queues it for each event-engine
handler; the *event thread* then runs the handlers soon after, in ``seq``
order, taking everything queued at once. Consecutive events for the same
script go into Lua in one call (``EventQueue.drain`` in ``_fastcall.c``):
one lock hand-off, one GIL release, every handler still under its own time
limit and with its own error. In C, the emitting thread also prepares each
event for Lua when it queues it (it holds the GIL anyway), so that call can
keep taking the script's newly queued events without the GIL, in parallel
with the emitter, for up to 20 ms (see the EventQueue comment there).
What the user gives up is only "ran before ``emit`` returned":
``Runtime.flush_events()`` waits for the queue, and a script's stop delivers
what was queued before it.

Ordering: one FIFO for the whole runtime, appended in the bus's delivery
order (which is ``seq`` order for every subscriber), and one deliverer at a
time (``_run_lock``), so each engine sees its events in ``seq`` order, as
with immediate delivery. Events emitted by handlers are queued behind.

Threads: ``push`` runs on the bus's delivering thread (any emitting
thread); ``deque.append`` and ``popleft`` are atomic, so pushing takes no
lock. The event thread (threaded runtimes) or the caller of ``run_pending``
(stepped runtimes, ``flush``) delivers, holding ``_run_lock``. Wake-ups:
the event thread sets ``_sleeping`` under ``_cond`` and re-checks the queue
before it waits; ``push`` appends first and notifies only if ``_sleeping``
is set, so a push never waits on a lock while the thread is busy and no
wake-up is lost.

Pacing (no GIL convoy): a handler that calls into Python (``shared``,
``logger``, a host API) needs the GIL on the event thread once per call. A
host thread that stays in Python between emits (a game loop) holds it and
gives it up only when CPython's switch interval (5 ms) forces it: one call
per 5 ms, so at 10k events/s the queue grew by thousands and each event
waited tens of milliseconds. So the bus calls ``pace()`` after every
top-level emit (``Bus.set_pace``, C and Python emit paths alike): when the
oldest event not yet delivered was queued more than
``HostSettings.deferred_max_lag`` ago (default ``PACING_MAX_LAG``, 0.5 ms;
None turns pacing off) *and the deliveries are cheap*, the emitting thread
waits, with the GIL released, until everything queued before it has been
delivered; the event thread then has the GIL at once. A thread that keeps
up, or whose handlers stay in Lua (which runs without the GIL), never makes
an emit wait. Never on the event thread itself (a handler's emit), never in
stepped runtimes (no event thread). Ordering and delivery are unchanged:
only when ``emit`` returns. Counted in ``statistics()``
(``Runtime.deferred_statistics()``).

Cheap deliveries only (why pacing is safe to have on by default): a wait
helps only when the backlog exists because the event thread cannot get the
GIL; then each delivery, once it runs, costs the event thread little CPU.
When the deliveries themselves are slow (a script whose handlers each run
milliseconds of Lua, under the time limit), waiting cannot bring the lag
down: it only holds the host to the handlers' rate, which is what a hostile
review found (the paced host waited 95-99 % of its time, 465 vs 4,787
emits/s unpaced). So the event thread adds up its own CPU time inside
``drain()`` (its thread CPU clock, read at the start and end of each
drain), and the emitting thread, on emits that found the queue late, adds
the running drain's part (the event thread's clock through
``pthread_getcpuclockid``) and estimates the CPU one delivery costs, over a
window of ``PACE_SAMPLE`` (16) deliveries or 16x the cheap cost in CPU,
whichever closes first (a handler still running closes it alone). Only
inside drains: waking up, sleeping and the Python loop around ``drain()``
cost per drain, and made the many small drains of a paced GIL-starved
handler look costly (first version: the thread's whole CPU; on the Python
queue a 2-call handler had hundreds of late emits declined). A delivery costing
more than ``deferred_max_lag / PACE_CHEAP_DIV`` (125 us at the default) is
costly: late emits then do not wait (``pace_declined``), and a wait in
progress re-reads the estimate at each delivery (and every 4x the lag) and
ends when it turns costly (``pace_gave_up``). CPU time, not wall time, because the convoy and a
loaded machine both stretch a delivery's wall time (waiting for the GIL, or
for a CPU) without costing CPU; a slow handler costs CPU whatever the load.
Measured first (event-thread CPU per delivery, host emitting from a Python
loop at 10k events/s, load 3-7 on the 2-core box): the convoy bench handler
(``probe:mark()`` + a shared increment) 7-17 us on the C queue, 20-40 us on
the Python reference queue (8 Python calls per handler: ~30 / ~70 us);
handlers of 20,000 / 400,000 Lua additions 140-290 us / 2.2-4 ms. The
rejected alternatives: wall-clock bounds on the emitting side (a wait
budget of 25 ms per 100 ms; a cap per wait plus a calm period after a
give-up) also fixed the stall, but a loaded machine's ordinary GIL hand-offs
used them up, so the convoy row's p99 went from 0.66 ms to 21.8 / 88 ms
(commits a0b8c71, d972362). What stays from before: a wait also ends when
the event thread finishes nothing for ``PACE_GIVE_UP`` times the lag (a
handler blocked on a lock the emitting thread holds spends no CPU, so only
this catches it), and emits then do not wait again until it finishes
something. What a host still pays: for cheap deliveries, waits of at most a
few deliveries' worth (the ones queued within the lag); an attacker whose
deliveries sit just under the line (125 us) makes a host that emits every
millisecond wait ~10 % of its time. Host calls that block *without* CPU
(I/O, a sleep, with the GIL released): by CPU alone such handlers were
cheap and a waiting host was held to their rate (a host API sleeping 5 ms
per event: the host spent 81 % of its time in emit). So the event thread's
wall time inside host calls (``lua.boundary.detached`` calls the queue's
``host_enter``/``host_leave`` around each) counts too, but only the part
spent while an emit waits: then the emitter has let the GIL go and the
call's time is its own. At other times it may be the convoy itself: a
cheap call that lets the GIL go for an instant (a log line written, a
contended lock) waits there for the host busy in Python, and counting that
(the first version) made cheap deliveries costly, declined every late emit
and left the event thread stuck in the call (a hostile review: 50-58 of 60
late emits declined, the queue growing by each). A blocked handler is
therefore found during the first wait for it, which then ends (given up,
costly); it is waited for again once a window of the estimate closes
cheap (16 deliveries). Wall time per delivery as a whole is no fix (on a
loaded machine it is the event thread's wait for a CPU: a prototype
declined hundreds of convoy emits at load 3); an OS preemption inside a
host call during a wait does count. The price of a wait is a
hand-off between two threads: on a saturated machine (the 2-core box at
load 12) a woken thread waits milliseconds for a CPU, and a host that emits
a burst as fast as it can and only then waits for the handlers got through
it faster unpaced (55k vs 101k events/s; at load ~4, 194-241k paced vs
~110k unpaced): such a host can set ``deferred_max_lag=None``.

The queue's bound (``HostSettings.max_queued_deliveries``, 250,000: ~125 MiB of ring at most, a
half-second backlog at 500k deliveries/s): since
pacing does not wait for slow handlers (nor when it is off, or gave up), the
queue is what absorbs a backlog; past the bound a delivery is not queued
(dropped, counted in ``statistics().dropped``, logged by the draining thread
once per drain with how many) rather than growing without end (each queued
delivery holds ~0.5 KiB in the C ring, and its event).

Why this and not the alternatives (measured first, ``py-spy`` on the event
thread with the host emitting from a Python loop): the handlers' Python
calls were cheap once the GIL was free, but the event thread spent its time
waiting for it, and a bound on the queue length alone (an earlier prototype)
still left 317-792 events queued, each waiting for the switch interval. The
age of the oldest undelivered event is what the host thread is asked to
bound, so it is what pacing measures. What the handler itself cost went
mostly to ``shared:int(name)``'s check that the cached name still holds an
int (~3 us in Python, one handle built per call): it is one locked dict
lookup in C on the memory backend now (``MemoryHandle.native_check``).

Immediate delivery, threaded vs stepped (issue 16 said threaded was ~17 %
slower): not reproduced. The per-event path is the same C code in both; the
only difference is the watchdog's clock (threaded: read in C; a stepped
runtime with an injected clock calls it in Python per handler call). Best of
8 interleaved rounds, 30k emits each, 3-field pure-Lua handler: threaded
466k events/s, stepped with an injected clock 403k, stepped with the real
clock 227k wall / 434k per CPU-second of the emitting thread (threaded 473k);
single runs on the shared 2-core machine differ by up to 30 %.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moonbus.bus import Bus, Event
from moonbus.host.deferred_queue import PyEventQueue, Target
from moonbus.lua.boundary import HostCalls
from moonbus.native import load_fast_path

if TYPE_CHECKING:  # context imports this module (its annotations only)
    from moonbus.host.context import HostSettings

__all__ = ["EVENT_DELIVERY_MODES", "DeferredDelivery", "DeferredStatistics"]

EVENT_DELIVERY_MODES = ("immediate", "deferred")
_log = logging.getLogger("moonbus.events")
# The smallest lag the queue is given for a positive deferred_max_lag (seconds):
# a whole nanosecond, so that a tiny setting still paces instead of rounding
# to 0, which the C queue reads as "pacing off".
_MIN_LAG = 2e-9


@dataclass(frozen=True)
class DeferredStatistics:
    """What the event thread did, and what pacing cost the emitting threads.

    ``paced_emits``: emits that waited for the event thread (``pace``);
    ``paced_seconds``: their total wait; ``pace_gave_up``: waits that ended
    early, because the event thread finished nothing for PACE_GIVE_UP times
    the lag or because its deliveries turned costly;
    ``pending``: deliveries queued or running, not yet finished;
    ``pace_declined``: emits that found the queue late but did not wait
    because each delivery costs the event thread more than a quarter of the
    lag (CPU time, plus wall time inside host calls while an emit waited):
    waiting would hold the host to the handlers' rate;
    ``delivery_cpu``: that cost, seconds per delivery (the last estimate;
    0.0 before one was made); ``host_call_seconds``: the event thread's wall
    time inside the handlers' calls into Python (host APIs, ``shared``,
    ``logger``) so far, all of it (what an emit's wait saw of it is part of
    that cost); ``dropped``: deliveries
    not queued because the queue held ``max_queued_deliveries`` (each
    overflow is logged); ``peak``: the most deliveries queued at once.
    """

    delivered: int
    pending: int
    paced_emits: int
    paced_seconds: float
    pace_gave_up: int
    pace_declined: int
    delivery_cpu: float
    dropped: int
    peak: int
    host_call_seconds: float = 0.0


def _queue_type(native: bool) -> Any:
    fast = load_fast_path("moonbus.lua._fastcall", native=native)
    return PyEventQueue if fast.module is None else fast.module.EventQueue


class DeferredDelivery:
    """The runtime's queue of (target, sub_id, event) and the thread that drains it."""

    def __init__(self, *, threaded: bool, native: bool = True, max_batch: int = 16384,
                 name: str = "moonbus-events",
                 progress: Callable[[int | None], None] | None = None,
                 max_lag: Callable[[], float | None] = lambda: None,
                 max_size: Callable[[], int] = lambda: 0) -> None:
        self._max_batch = max_batch
        # HostSettings.deferred_max_lag (None: no pacing) and
        # max_queued_deliveries (0: no bound), read live; pushed into the
        # queue before each drain (the event thread, or run_pending's caller).
        self._max_lag = max_lag
        self._max_size = max_size
        self._dropped_reported = 0  # drops already logged (the draining thread)
        # Told, after each batch, the seq of the oldest event still queued
        # (None: none): every handler of the events before it has run, so the
        # bus can forget their cascade links (Bus.release_cascades).
        self._progress = progress
        self._cond = threading.Condition(threading.Lock())
        self._queue = _queue_type(native)(notify=self._notify, report=self._report)
        self._run_lock = threading.RLock()
        self._delivering = False
        self._stop = False
        self.delivered = 0
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._apply_settings()
        if self._thread is not None:
            self._thread.start()

    @classmethod
    def attach(cls, bus: Bus, *, threaded: bool, native: bool,
               settings: Callable[[], HostSettings]) -> DeferredDelivery:
        """The runtime's deferred delivery, wired to its bus: the queue, not the
        end of a bus drain, says when the cascade links of queued events can go
        (``moonbus.bus.cascade``), and a threaded runtime paces top-level emits.
        ``settings``: the runtime's HostSettings, read live."""
        bus.cascade.held = True
        deferred = cls(threaded=threaded, native=native, progress=bus.release_cascades,
                       max_lag=lambda: settings().deferred_max_lag,
                       max_size=lambda: settings().max_queued_deliveries)
        if threaded:
            bus.set_pace(deferred.pace)
        return deferred

    @property
    def native(self) -> bool:
        """Whether the C queue (and its batches) is in use."""
        return not isinstance(self._queue, PyEventQueue)

    # ------------------------------------------------------------ producers
    def handler(self, target: Target, sub_id: int) -> Callable[[Event], None]:
        """The bus handler that queues each event for ``target(sub_id, event)``."""
        handler: Callable[[Event], None] = self._queue.handler(target, sub_id)
        return handler

    def push(self, target: Target, sub_id: int, event: Event) -> None:
        """Queue one delivery (the bus's delivering thread)."""
        self._queue.push(target, sub_id, event)

    def pace(self) -> None:
        """The bus's pace hook (``Bus.set_pace``): after a top-level emit, on
        the emitting thread, wait with the GIL released while the event
        thread is held up (see the module docstring). Stepped runtimes have
        no event thread: nothing to wait for, so they never install it."""
        self._queue.pace()

    @property
    def host_calls(self) -> HostCalls | None:
        """``(enter, leave)``, called around each call an event-engine script
        makes into Python (``moonbus.lua.boundary.detached``): on the event
        thread their wall time during paced waits counts as delivery cost (see the
        module docstring). None in stepped runtimes (nothing is paced)."""
        if self._thread is None:
            return None
        return self._queue.host_enter, self._queue.host_leave

    def _apply_settings(self) -> None:
        lag = self._max_lag() if self._thread is not None else None
        # A positive lag is never 0 (pacing off): the C queue keeps whole
        # nanoseconds, and settings.set accepts any positive value (1e-300 ms).
        self._queue.max_lag = 0.0 if lag is None else max(float(lag), _MIN_LAG)
        self._queue.max_size = int(self._max_size())

    def _report_drops(self) -> None:
        # Draining thread: each overflow is logged once, with how many so far
        # (counted in statistics().dropped, live).
        dropped = self._queue.bound_counts[0]
        if dropped > self._dropped_reported:
            _log.error("deferred delivery: the queue was full (max_queued_deliveries=%d): "
                       "%d deliveries dropped (%d in all); handlers are slower than the "
                       "events emitted", self._queue.max_size,
                       dropped - self._dropped_reported, dropped)
            self._dropped_reported = dropped

    def statistics(self) -> DeferredStatistics:
        """Deliveries so far, those not finished, and what pacing cost emitters."""
        waits, seconds, gave_up, pending, declined, cpu, host = self._queue.pace_counts()
        dropped, peak = self._queue.bound_counts
        return DeferredStatistics(delivered=self.delivered, pending=pending, paced_emits=waits,
                                  paced_seconds=seconds, pace_gave_up=gave_up,
                                  pace_declined=declined, delivery_cpu=cpu, dropped=dropped,
                                  peak=peak, host_call_seconds=host)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify()

    @staticmethod
    def _report(target: Any, exc: BaseException) -> None:
        _log.error("deferred delivery to %r failed", target, exc_info=exc)

    @property
    def pending(self) -> int:
        """Deliveries queued and not yet started."""
        return len(self._queue)

    # ------------------------------------------------------------ delivering
    def run_pending(self) -> int:
        """Deliver everything queued, on this thread; returns how many ran.

        Stepped runtimes call it from ``run_due``; the event thread calls it
        when woken. Re-entrant calls (a handler stopping its own script) return 0.
        """
        with self._run_lock:
            if self._delivering:
                return 0
            self._delivering = True
            try:
                return self._drain()
            finally:
                self._delivering = False

    def _drain(self) -> int:
        queue = self._queue
        progress = self._progress
        ran = 0
        self._apply_settings()  # a settings change applies from the next drain
        self._report_drops()
        while len(queue):
            taken: int = queue.drain(self._max_batch)
            ran += taken
            self.delivered += taken
            if progress is not None:
                progress(queue.head_seq())
        return ran

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything queued before the call has been delivered
        (True), or after ``timeout`` seconds (False). From the event thread
        itself it returns at once (a handler cannot wait for itself)."""
        if threading.current_thread() is self._thread:
            return not len(self._queue)
        if self._thread is None:
            self.run_pending()
            return not len(self._queue)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._run_lock:  # taken between two drains: nothing in flight
                if not len(self._queue):
                    return True
                if self._thread is None or not self._thread.is_alive():
                    self._drain()
                    continue
            with self._cond:
                self._cond.notify()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.0005)

    def _run(self) -> None:
        cond = self._cond
        self._queue.owner = threading.get_ident()  # never paced: it is the one drained for
        while True:
            with cond:
                while not len(self._queue) and not self._stop:
                    # Published before the last look at the queue (under the
                    # GIL, push appends and then reads it), so no wake-up is lost.
                    self._queue.sleeping = True
                    if len(self._queue):
                        break
                    cond.wait()
                self._queue.sleeping = False
                if self._stop and not len(self._queue):
                    return
            self.run_pending()

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued, then stop the event thread (idempotent).

        Returns False when the event thread was still running ``timeout``
        seconds after it was told to stop (a handler that does not return);
        the caller reports it (``Runtime.close``).
        """
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True
