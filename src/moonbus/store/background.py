"""One background thread that runs a piece of work when asked (requests coalesce).

Why: the Redis store's amortized prune costs a few round trips; run on the
appending thread it would stall that emit (and every emit ordered after it).
Here the appending thread only *requests* a run; the worker runs the work once
for all requests made since its last run.

Threads: ``request``, ``wait_idle`` and ``close`` may be called from any
thread; ``work`` runs on the worker thread only. An exception from ``work`` is
handed to ``on_error`` (the worker carries on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Coalescing"]


class Coalescing:
    """Runs ``work`` on its own thread whenever ``request`` was called since its last run."""

    def __init__(
        self, work: Callable[[], Any], *, name: str, on_error: Callable[[Exception], None]
    ) -> None:
        self._work = work
        self._on_error = on_error
        self._cond = threading.Condition(threading.Lock())
        self._requested = 0
        self._served = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a run (returns at once)."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def wait_idle(self) -> None:
        """Wait until a run that started after every request made so far has finished."""
        with self._cond:
            target = self._requested
            while self._served < target and not self._closing:
                self._cond.wait()

    def close(self) -> None:
        """Stop the worker after its current run (pending requests are dropped). Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._served == self._requested and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                target = self._requested
            try:
                self._work()
            except Exception as exc:
                self._on_error(exc)
            with self._cond:
                self._served = target
                self._cond.notify_all()
