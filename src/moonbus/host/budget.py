"""One handler time budget per script per event (SPEC §4b), and its state.

Why: ``handler_timeout`` bounds one Lua call. A script with 50 handlers for
``tick``, each a runaway loop, used to cost 50 x 100 ms on every tick. Now
all of one event engine's handlers for one event share one budget: each
runs under what the earlier ones left, and once it is spent the rest are
skipped (counted in ``skipped``; the calls that did run are counted in
``calls``, the script's handler calls for ``ScriptInfo``/``/metrics``).
The budget is wall time between the start and the end of the script's
handlers for that event, so a handler that waited (for the GIL, in a host
API) uses it up too: that only costs later handlers of the same script for
the same event, never another script; the abort itself stays CPU-time
based (``moonbus.lua.watchdog``).

``HandlerBudget`` is the state the C delivery path (``_fastcall.c``) and
the Python path share by type: the C type when the extension is built,
``PyHandlerBudget`` otherwise. The C path takes only a fresh budget (a new
event) and hands an event whose budget is partly spent to
``ScriptEngine.deliver``, which applies ``remaining``/``spend`` below.

``blocked`` stops every handler of the script at once: set when the script
is stopped for exhausting its budget too often (``ScriptHost``), so events
already queued for it (deferred delivery) do not run either.

Threads: read and written by the thread delivering to the engine (the
bus's delivering thread, or the event thread), with the GIL held; ``blocked``
is set by that thread too (the quarantine decision happens there).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from moonbus.lua.fastcall import FAST_CALL
from moonbus.native import load_fast_path

__all__ = ["PyHandlerBudget", "TimeoutWatch", "make_handler_budget", "remaining", "spend"]


class PyHandlerBudget:
    """The budget state in Python (``_fastcall.HandlerBudget`` in C)."""

    __slots__ = ("blocked", "calls", "seq", "skipped", "spent_ns")

    def __init__(self) -> None:
        self.seq = -1  # the event whose budget was spent last
        self.spent_ns = 0  # wall time this engine's handlers used on it
        self.blocked = False  # the script is being stopped: run nothing
        self.skipped = 0  # handler calls not run (budget spent, or blocked)
        self.calls = 0  # handler calls run (the script's count for /metrics)


def make_handler_budget(native: bool) -> Any:
    """A ``HandlerBudget`` the C delivery path accepts (when built), or the Python one."""
    fast = load_fast_path(FAST_CALL, native=native)
    return PyHandlerBudget() if fast.module is None else fast.module.HandlerBudget()


def remaining(budget: Any, seq: int, limit: float) -> tuple[float, int] | None:
    """(seconds left for a handler of event ``seq``, its start in monotonic ns),
    or None (counted) when the script's budget for that event is spent or the
    script is blocked."""
    if budget.blocked:
        budget.skipped += 1
        return None
    spent = budget.spent_ns if budget.seq == seq else 0
    left = limit - spent / 1e9
    if left <= 0:
        budget.skipped += 1
        return None
    return left, time.monotonic_ns() - spent


def spend(budget: Any, seq: int, start_ns: int) -> None:
    """The handler of event ``seq`` that started its budget at ``start_ns`` ended."""
    budget.seq = seq
    budget.spent_ns = time.monotonic_ns() - start_ns


class TimeoutWatch:
    """A script's handler budget exhaustions: ``total``, and whether the last
    ``max_handler_timeouts`` fell within ``handler_timeout_window`` seconds
    (then ``exhausted`` returns the reason to stop it as ``failed``). A window
    rather than "consecutive": a script that runs out on every other event
    costs the host as much and must not escape. Written by the thread that
    saw the timeout (delivering or script thread), one at a time per script."""

    def __init__(self) -> None:
        self.total = 0
        self._times: deque[float] = deque()

    def reset(self) -> None:
        self._times.clear()

    def exhausted(self, settings: Any) -> str | None:
        """Record one exhaustion now; the reason to stop the script, or None."""
        self.total += 1
        times = self._times
        now = time.monotonic()
        times.append(now)
        limit = settings.max_handler_timeouts
        window = settings.handler_timeout_window
        while len(times) > limit or (times and now - times[0] > window):
            times.popleft()
        if len(times) < limit:
            return None
        return (f"handler time limit exhausted {len(times)} times within {window:g} s "
                f"(max_handler_timeouts={limit}, handler_timeout_window={window:g} s): "
                "stopping as failed")
