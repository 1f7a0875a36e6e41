"""A lifecycle script's event engine: released when it has nothing to deliver,
made again when a host call needs it.

Why: a script's event engine exists to run the handlers its top-level code
registers (``events:on`` while the chunk loads). A script that defines
``poll`` (or ``on_start``/``on_stop``) and registers no handler at the top
level never runs Lua in it again: handlers its lifecycle code registers
live in the main engine (deferred, SPEC §4). Keeping the state cost about
170 KiB per script, about half of a polling script's memory, and 10,000
polling scripts did not fit in 3 GiB. So ``ScriptHost.start`` loads the
event engine as before (the top-level code still runs in both engines, in
the same order, with the same log lines), and when the chunk defines a
lifecycle function and no top-level handler is left registered, it closes
it before loading the main engine (``_release_idle_event_engine``).

What still needs it: ``ScriptHost.call`` and ``evaluate`` (the event
engine's top-level state, docs/embedding.md). The first of them after a
release makes the event engine again (``_event_for_call``): the chunk is
loaded afresh, so the top-level code runs once more then (its log lines
say ``event``), and the engine is kept from then on, like any event engine
(handlers that code registers are delivered). Documented in
docs/scripting.md ("Two engines").

Threads: the release runs in ``start``, on the thread that starts the
script, under ``_control``. ``_event_for_call`` runs on any thread (the
callers of ``call``/``evaluate``): it loads the new engine holding no lock
of the script (its top-level code may emit, and a thread delivering that
event may be the one that holds ``_control``), then installs it under
``_state`` (the leaf lock), only if the script is still active and the
engine is still released; otherwise (the script stopped, or another caller
installed one first) it closes its own. ``_close_engines`` clears
``_event_released`` under ``_state`` before closing, so an engine
installed after it is impossible. Counters of the released engine (refused
handlers) are kept in the host's ``*_before`` counters, as at a stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moonbus.host.engine_side import ScriptEngine

__all__ = ["EventOnDemand"]

_ACTIVE = ("starting", "running", "stopping")


class EventOnDemand:
    """The part of ``ScriptHost`` that releases and remakes the event engine."""

    # Set by ScriptHost.__init__ (see host/script.py).
    _state: threading.Lock
    _status: str
    _event: ScriptEngine | None
    _event_released: bool
    _skipped_before: int
    _calls_before: int
    _refused_before: int
    _make_engine: Callable[[str], ScriptEngine]

    def _release_idle_event_engine(self) -> None:
        """Close the event engine when it has no handler to deliver (start,
        under ``_control``; the chunk defines a lifecycle function)."""
        side = self._event
        if side is None or side.subscriptions or side.patterns:  # handlers to deliver
            return
        self._skipped_before += int(side.budget.skipped)
        self._calls_before += int(side.budget.calls)
        self._refused_before += side.handlers_refused
        with self._state:
            self._event = None
            self._event_released = True
        side.close()

    def _event_for_call(self) -> ScriptEngine | None:
        """The event engine for ``call``/``evaluate``; made again (the chunk
        loaded afresh) when it was released; None when the script has none
        (not active). Raises what loading the chunk raises."""
        side = self._event
        if side is not None or not self._event_released:
            return side
        if self._status not in ("starting", "running"):
            return None  # call/evaluate refuse it: nothing to make
        made = self._make_engine("event")
        try:
            made.load_chunk()
        except BaseException:
            made.close()
            raise
        with self._state:
            installed = self._event_released and self._event is None and \
                self._status in _ACTIVE
            if installed:
                self._event = made
                self._event_released = False
            side = self._event
        if not installed:
            made.close()
        return side
