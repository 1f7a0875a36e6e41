"""``moonbus run --watch``: reload a script when its file changes.

Authors edit a script and see the change in the running game at once. The
watcher polls the files of every script (a ``.lua`` file, or every ``.lua``
file and the ``manifest.json`` of a script folder) by modification time and
size; stdlib only, no file-system notification library. When a script's
files changed it:

1. re-reads the script and compiles every file of it in a probe engine
   (``compile_problems``, the same check ``moonbus run`` does before it
   starts). A syntax error (or an unreadable file) is logged as
   ``file:line: message`` in the script's log, at error level, and the
   running version is kept: nothing is stopped.
2. otherwise reloads it with ``ScriptHost.reload``: the old instance is
   stopped (``on_stop`` runs), the new one started; shared values survive.
   A script that had ended (failed, stopped) is started again: fixing the
   error is how an author gets it back.

A change is acted on once, when it has settled: the files must look the
same at two polls in a row, so a file caught half-written (an editor that
truncates, then writes) is not loaded; a missing file (an editor replacing
it) is waited for. So a change is seen within about two intervals.

Threads: ``check`` is called by the run's control thread (the one that owns
the session's hosts) between waits of the real-time loop; there is no
thread of its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from moonbus.cli.script_check import compile_problems
from moonbus.errors import ConfigError, ScriptError
from moonbus.host.script import ScriptHost
from moonbus.host.source import load_source
from moonbus.session.session import ScriptPlan, Session

__all__ = ["DEFAULT_WATCH_INTERVAL", "ScriptWatcher"]

#: Seconds between two looks at the files: quick enough to feel immediate.
DEFAULT_WATCH_INTERVAL = 0.2

#: (path, mtime_ns, size) of each file of a script; missing files are left out.
Snapshot = tuple[tuple[str, int, int], ...]


def _files_of(plan: ScriptPlan) -> list[Path]:
    source = plan.source
    if source.folder is None:
        return [source.path]
    folder = source.folder
    return [folder / "manifest.json", *sorted(folder.rglob("*.lua"))]


def snapshot(plan: ScriptPlan) -> Snapshot:
    """What the watcher compares: each file's modification time and size."""
    rows: list[tuple[str, int, int]] = []
    for path in _files_of(plan):
        with contextlib.suppress(OSError):  # being replaced by an editor: seen next time
            info = path.stat()
            rows.append((str(path), info.st_mtime_ns, info.st_size))
    return tuple(rows)


class ScriptWatcher:
    """Reloads the session's scripts whose files changed (see the module)."""

    def __init__(self, session: Session, plans: Sequence[ScriptPlan], *,
                 interval: float = DEFAULT_WATCH_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(plans) != len(session.hosts):
            raise ValueError("one plan per script of the session")
        self._session = session
        self._plans = list(plans)
        self._hosts: list[ScriptHost] = list(session.hosts)
        self._loaded = [snapshot(plan) for plan in self._plans]
        self._pending: list[Snapshot | None] = [None] * len(self._plans)
        self._interval = interval
        self._clock = clock
        self._next = clock() + interval
        self.reloads = 0
        self.refused = 0

    def check(self) -> None:
        """Look at the files if ``interval`` has passed; reload what changed."""
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval
        for index, plan in enumerate(self._plans):
            current = snapshot(plan)
            if current == self._loaded[index] or not current:
                self._pending[index] = None
                continue
            if current != self._pending[index]:
                self._pending[index] = current  # changed: act once it stays so
                continue
            self._pending[index] = None
            self._loaded[index] = current
            self._reload(index, plan)

    def _log(self, host: ScriptHost, level: str, message: str) -> None:
        self._session.runtime.host_log(host.name, level, message)

    def _reload(self, index: int, plan: ScriptPlan) -> None:
        host = self._hosts[index]
        keep = "the running version is kept" if host.status in ("starting", "running") \
            else f"the script stays {host.status}"
        try:
            fresh = load_source(plan.display, max_bytes=plan.source.max_bytes)
        except (ConfigError, ScriptError) as exc:
            self.refused += 1
            self._log(host, "error", f"watch: not reloaded: {exc}; {keep}")
            return
        fresh_plan = replace(plan, source=fresh)
        problems = compile_problems([fresh_plan])
        if problems:
            self.refused += 1
            for problem in problems:
                self._log(host, "error", f"watch: not reloaded: {problem}; {keep}")
            return
        self._plans[index] = fresh_plan
        try:
            host.reload()
            if host.status not in ("starting", "running"):
                host.start()  # it had ended: the edit is how the author restarts it
        except (ScriptError, ConfigError) as exc:
            # A failing top-level chunk is recorded and logged by the host (failed).
            self._log(host, "error", f"watch: reloaded {plan.display}, but it failed: {exc}")
            return
        self.reloads += 1
        self._log(host, "info", f"watch: reloaded {plan.display}")
