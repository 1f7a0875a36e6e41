"""A script stopped, unloaded or reloaded from inside its own call.

A handler (or a host API it calls) may stop, unload or reload the script it
belongs to. In a threaded runtime that thread may not wait for the script
thread: it is inside ``emit`` (the script thread may need the emit lock) or
inside one of the script's engine calls (closing that engine waits for it).
So, as in a stepped runtime:

* when no script thread is in the script, the stop runs here, on the calling
  thread (``_stop_here``): otherwise a close or a reload right after would
  find it "stopping" for good;
* when a script thread is in it (a worker in ``poll``), the stop is that
  thread's, and a reload asked meanwhile cannot wait for it (the worker's
  stop waits for the engine this thread holds): it is kept
  (``_reload_after_stop``) and the worker starts the new source when its
  stop ends (``_finish``).

Another script's stop is always left to its own script thread (its
``on_stop`` must not run inside, nor count against, the caller's handler).
Threads: ``_stop_here`` on the caller's thread; ``_finish`` on the thread
running the script's stop, under ``_control``; ``_reload_to`` is read and
written under ``_state``, the lock the stop's status change is made under,
so a reload kept before the status changed is always seen by that stop.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from moonbus.errors import ScriptError
from moonbus.host.lifecycle import ACTIVE, ScriptLifecycle


class SelfStop(ScriptLifecycle):
    """The part of ``ScriptHost`` that stops its own script (module docstring)."""

    _reload_to: Any  # the source a reload left to the script thread, or None
    source: Any  # the script's LoadedSource (ScriptHost)

    if TYPE_CHECKING:
        def start(self) -> None: ...  # ScriptHost's

    def _stop_here(self) -> None:
        """The stop just asked for, done here (as stepped mode does) when this
        thread is in one of the script's own engine calls and no thread runs
        the script (see the module docstring)."""
        if self._runner is None and self._inside() and self._control.acquire(blocking=False):
            try:
                if self._runner is None and self._status in ACTIVE:  # (re-entrant lock)
                    self._ctx.scheduler.remove(self)
                    self._runner = threading.get_ident()
                    try:
                        self._finish()
                    finally:
                        self._runner = None
            finally:
                self._control.release()

    def _inside(self) -> bool:
        """Whether this thread is inside a call of one of the script's engines."""
        return any(side is not None and side.engine.held_here for side in (self._event, self._main))

    def _reload_after_stop(self, source: Any) -> bool:
        """Keep ``source`` for the stop in progress on a script thread to start
        (True), when the caller is inside the script's own call and the script
        is still stopping; False: the caller reloads it itself."""
        if not self._inside():
            return False
        with self._state:
            if self._status not in ACTIVE:
                return False
            self._reload_to = source
            return True

    def _finish(self) -> None:
        """The stop (``ScriptLifecycle._finish``), then a reload kept for it."""
        super()._finish()
        with self._state:
            source, self._reload_to = self._reload_to, None
        if source is not None:
            self.source = source
            self._reporter.retarget(source)
            with contextlib.suppress(ScriptError):  # recorded by start: "failed"
                self.start()
