"""Immediate event delivery goes first: scheduler workers hold off while it runs.

Why: event-engine handlers run on the thread that emitted the event (the bus's
delivering thread), one Lua call per handler. Every Lua call releases the GIL (lupa lets Lua run in
parallel), and every return has to take it back. With scheduler workers busy
running thousands of polls, the emitting thread lost that race again and
again: one ``tick`` to 1,000 scripts took ~200 ms instead of ~5 ms. Handlers
are the "immediate" path of SPEC §4; polls are periodic. So while the bus is
delivering (from the start to the end of a drain: all the handlers of an
event, and of the events they emit), a worker that is about to *start* a slice
waits; a slice already running is never interrupted. The bus calls ``enter``
and ``exit`` (``Bus(gate=...)``), so there is no cost per handler.

The wait is bounded by ``max_wait``: under a continuous flood of events polls
still run, at least one slice per worker per ``max_wait``. It is a condition
wait, not polling; ``exit`` notifies only when a worker is waiting.

The counting half (``enter``/``exit``) is a small C type when the extension
is built (``moonbus.bus._fastemit.GateCounter``): the bus's C emit path then
counts a drain without a Python call (~170 ns per emit saved); otherwise
``PyGateCounter`` does the same in Python. Tests run the gate over both.

Threads: ``enter``/``exit`` are called by the bus's delivering thread (one at a
time: the bus serialises delivery); ``hold`` by scheduler workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from moonbus.native import load_fast_path

__all__ = ["DeliveryGate", "GateMixin", "PyGateCounter"]


class PyGateCounter:
    """The counting half of the gate in Python; ``moonbus.bus._fastemit``'s
    ``GateCounter`` is the same in C (used when built: a bus whose gate is one
    then counts drains without a Python call). ``active``: drains in progress;
    ``waiting``: workers held off; ``exit`` calls ``_wake`` when the last drain
    ends while a worker waits."""

    # Provided by the gate built on this counter (GateMixin._wake), as the C
    # GateCounter also looks it up on the instance.
    _wake: Callable[[], None]

    def __init__(self) -> None:
        self.active = 0
        self.waiting = 0

    def enter(self) -> None:
        """The bus starts delivering (delivering thread)."""
        self.active += 1

    def exit(self) -> None:
        """The bus finished delivering; wakes waiting workers."""
        self.active -= 1
        if self.waiting and not self.active:
            self._wake()


# The C counter whenever the C emit path can be used at all (the bus's C core
# then counts drains itself); chosen once, as a base class must be.
_FAST_EMIT = load_fast_path("moonbus.bus._fastemit", env=False).module
_Counter = PyGateCounter
if _FAST_EMIT is not None:
    _Counter = _FAST_EMIT.GateCounter  # type: ignore[misc]


class GateMixin:
    """What a gate adds to its counter (``_Counter``, C or Python): the
    condition workers wait on."""

    active: int
    waiting: int

    def __init__(self, *, max_wait: float = 0.05) -> None:
        super().__init__()
        self.active = 0
        self.waiting = 0
        self.max_wait = max_wait
        self._cond = threading.Condition(threading.Lock())

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def hold(self) -> None:
        """Scheduler worker: wait (at most ``max_wait``) while the bus delivers."""
        if not self.active:
            return
        with self._cond:
            self.waiting += 1
            try:
                self._cond.wait_for(lambda: not self.active, self.max_wait)
            finally:
                self.waiting -= 1


class DeliveryGate(GateMixin, _Counter):
    """A counter of drains in progress and a condition workers wait on."""
