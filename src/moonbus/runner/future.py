"""``JobFuture``: a ``concurrent.futures.Future`` whose ``cancel()`` stops running jobs.

Why a subclass: the standard ``Future.cancel()`` returns False once a job is
running. A runner job runs Lua that the engine can abort from another thread,
so ``cancel()`` here also works on a running job: it aborts the Lua call
(``engine.abort(token, "cancel")``), waits until the worker has unwound it
(typically well under a millisecond: the abort hook fires on the next Lua
instruction, and ``pcall``/coroutines cannot swallow it) and returns True;
the future then raises ``concurrent.futures.CancelledError``.

Phases (guarded by the future's own ``_condition``, a ``FutureCondition``:
an RLock that is its own condition variable, far cheaper to make than the
``threading.Condition`` of a plain ``Future``; the worker moves them forward)::

    QUEUED ──claim()──► PREPARING ──entering_lua()──► IN_LUA ──finish()──► FINISHING
      │ cancel(): removed from the queue, CANCELLED at once
      └───────────► DONE

A job run in a batch (see ``batch.py``) skips the middle phases: its future
stays QUEUED while its batch runs, so ``cancel()`` settles it at once as a
queued job, and the worker moves it straight to FINISHING with
``finish_queued()`` when the batch is over (False: it was cancelled, the
outcome is dropped)::

    QUEUED ──finish_queued()──► FINISHING

``cancel()`` in PREPARING or IN_LUA sets ``_cancel_requested``; in PREPARING
the worker then skips the Lua call, in IN_LUA ``cancel()`` also aborts it
(the engine takes the token of a call that is about to start); a job that
reaches ``finish()`` with the flag set ends CANCELLED whatever its outcome,
so ``cancel() == True`` always means
``CancelledError``. In FINISHING the result is being set: ``cancel()`` is too
late and returns False, as for any finished future.

Moving a *running* future to CANCELLED has no public API, so
``settle_cancelled`` does what ``Future.cancel`` and
``Future.set_running_or_notify_cancel`` do together, on the documented
private fields (``_condition``, ``_state``, ``_waiters``) that
``concurrent.futures`` itself relies on; ``wait()``, ``as_completed()``,
``asyncio.wrap_future`` and done-callbacks all see a normal cancellation
(the runner's tests check each of them).

Threads: ``cancel()`` and the ``Future`` API from any thread; ``claim``,
``entering_lua``, ``finish``, ``finish_queued`` and ``settle_cancelled``
only from the worker running the job.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, PENDING, RUNNING
from typing import Any

from moonbus.lua.watchdog import Abortable
from moonbus.runner.condition import FutureCondition

__all__ = ["JobFuture", "Phase"]


class Phase(enum.Enum):
    QUEUED = "queued"
    PREPARING = "preparing"
    IN_LUA = "in_lua"
    FINISHING = "finishing"
    DONE = "done"


class JobFuture(Future[Any]):
    """The future returned by ``Runner.submit`` (see the module docstring)."""

    # Defaults until the worker sets them (fewer stores per job in __init__).
    _cancel_requested = False
    _engine: Abortable | None = None
    _token = 0
    _worker = 0  # thread ident of the worker running the job

    def __init__(self, on_queued_cancel: Callable[[JobFuture], None] | None = None) -> None:
        # Future.__init__'s fields, with a FutureCondition instead of a
        # threading.Condition (a unit test checks no field of Future is missed).
        self._condition = FutureCondition()  # type: ignore[assignment]
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []
        self._phase = Phase.QUEUED
        self._on_queued_cancel = on_queued_cancel

    # ------------------------------------------------------------ any thread
    def cancel(self) -> bool:
        """Cancel the job, also while it runs; True means it raises ``CancelledError``."""
        with self._condition:
            phase = self._phase
            if phase is Phase.QUEUED:
                self._phase = Phase.DONE
            elif phase is Phase.PREPARING or phase is Phase.IN_LUA:
                first = not self._cancel_requested
                self._cancel_requested = True
                if first and phase is Phase.IN_LUA and self._engine is not None:
                    self._engine.abort(self._token, "cancel")
            elif not self._cancel_requested:
                return super().cancel()
        if phase is Phase.QUEUED:
            super().cancel()
            self.set_running_or_notify_cancel()  # lets wait()/as_completed() see it
            if self._on_queued_cancel is not None:
                self._on_queued_cancel(self)
            return True
        if self._worker != threading.get_ident():
            with self._condition:
                while self._state == RUNNING:
                    self._condition.wait()
        return True

    @property
    def phase(self) -> Phase:
        """Where the job is (for introspection and tests)."""
        return self._phase

    def fail_now(self, exc: BaseException) -> None:
        """Fail a job that never reached the queue (syntax error, bad arguments)."""
        with self._condition:
            self._phase = Phase.DONE
        self.set_exception(exc)

    def succeed_now(self, result: Any) -> None:
        """Resolve a request that needed no worker."""
        with self._condition:
            self._phase = Phase.DONE
        self.set_result(result)

    # ------------------------------------------------------------ worker only
    def claim(self) -> bool:
        """Mark the job running; False when it was cancelled while queued."""
        with self._condition:
            if self._phase is not Phase.QUEUED:
                return False
            # QUEUED under the lock: nobody cancelled it (cancel() leaves
            # QUEUED first), so the Future is PENDING; this is what
            # set_running_or_notify_cancel() would do.
            self._state = RUNNING
            self._phase = Phase.PREPARING
            self._worker = threading.get_ident()
            return True

    def entering_lua(self, engine: Abortable, token: int) -> bool:
        """The job's Lua call ``token`` is about to start; False when cancelled already.

        From here ``cancel()`` aborts call ``token``, also in the moment before
        it starts (``LuaEngine.abort`` accepts the next call's token).
        """
        with self._condition:
            if self._cancel_requested:
                return False
            self._engine = engine
            self._token = token
            self._phase = Phase.IN_LUA
            return True

    def finish(self) -> bool:
        """The Lua call is over; True when the job must end cancelled."""
        with self._condition:
            self._phase = Phase.FINISHING
            self._engine = None
            return self._cancel_requested

    def finish_queued(self) -> bool:
        """A batched job is over: QUEUED → FINISHING; False when it was cancelled.

        After True, ``cancel()`` is too late (the future is RUNNING, as after
        ``finish()``) and the worker sets the result or exception.
        """
        with self._condition:
            if self._phase is not Phase.QUEUED:
                return False
            self._state = RUNNING
            self._phase = Phase.FINISHING
            return True

    def settle_cancelled(self) -> None:
        """RUNNING → CANCELLED_AND_NOTIFIED, waking waiters and running callbacks."""
        with self._condition:
            if self._state != RUNNING:
                return
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
