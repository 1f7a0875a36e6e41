"""A stepped world for testing Lua scripts from Python: ``Sim``.

Script authors test their scripts the way ``moonbus run --tick-ms 0`` runs
them: the demo world (or an app) in virtual time, every tick followed by the
script slices due by then. ``Sim`` is that run with the steering wheel in
the test's hands: load scripts, advance ticks, emit events, then look at
shared values, stats, log lines and emitted events, with assertion helpers
whose messages say what happened instead.

It reuses the session ``moonbus run`` drives (``moonbus.session.session.Session``), so a test
sees exactly what ``moonbus run --tick-ms 0`` would: same world, same clock
(600 ms of virtual time per tick), same scheduling. Same scripts, seed and
steps give the same results, run after run.

``Sim`` does not need pytest; ``moonbus.testing`` adds the ``moonbus_sim``
fixture around it.

Threads: a ``Sim`` is stepped (no scheduler threads): every method runs on
the calling thread, and every script handler and poll runs on it too, inside
``advance``, ``emit`` and ``load``. It is not meant to be shared by threads.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from moonbus.app import App, AppWorld, load_app
from moonbus.bus import Event
from moonbus.errors import ConfigError
from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.runtime import LogLine, Runtime
from moonbus.session.session import Session
from moonbus.shared import SharedStore

__all__ = ["Sim", "SimFactory"]

ScriptRef = ScriptHost | str

_LEVELS = ("debug", "info", "warn", "error")


def _describe(event: Event) -> str:
    return f"#{event.seq} t={event.tick} {event.type} {dict(event.data)} from {event.source}"


class Sim:
    """One world, one stepped runtime and the scripts a test loads.

    ``app`` selects the host application: an ``App`` object, a
    ``"MODULE:ATTR"`` string as ``--app`` takes (the working directory is
    searched first), or ``None`` for the demo world. ``seed`` seeds the
    world. ``tick_seconds`` is the virtual time of one tick (600 ms, as in
    ``moonbus run``). ``event_delivery`` is the runtime's mode
    (``"immediate"`` or ``"deferred"``; both stepped on this thread).

    Use it as a context manager, or call ``close`` (the ``moonbus_sim``
    fixture does it for you).
    """

    def __init__(
        self,
        app: Any = None,
        *,
        seed: int = 0,
        tick_seconds: float = 0.6,
        event_delivery: str = "immediate",
        root: str | Path | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.app: App = app if isinstance(app, App) else load_app(app)
        self._session = Session([], seed=seed, app=self.app, virtual=True,
                                tick_seconds=tick_seconds, event_delivery=event_delivery)
        self._events: list[Event] = []
        self._logs: list[LogLine] = []
        self._session.runtime.bus.on("*", self._events.append, owner="moonbus-testing")
        self._session.add_log_sink(self._logs.append)
        self._session.start()

    # ------------------------------------------------------------ the parts
    @property
    def runtime(self) -> Runtime:
        """The stepped runtime (its bus, shared store, settings, admin registry)."""
        return self._session.runtime

    @property
    def world(self) -> AppWorld:
        """The app's world (the demo world by default): read its state, call its APIs."""
        return self._session.world

    @property
    def settings(self) -> HostSettings:
        """The runtime's live host settings (time limits...): read at each call."""
        return self._session.runtime.settings

    @property
    def tick(self) -> int:
        """The last tick the world completed (0 before the first ``advance``)."""
        return int(self._session.tick)

    @property
    def scripts(self) -> dict[str, ScriptHost]:
        """Loaded scripts by name, in load order."""
        return self._session.runtime.scripts

    def script(self, ref: ScriptRef) -> ScriptHost:
        """A loaded script by name (or the handle itself)."""
        if isinstance(ref, ScriptHost):
            return ref
        return self._session.runtime.script(ref)

    # --------------------------------------------------------------- driving
    def load(
        self,
        path: str | Path,
        options: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        namespace: str | None = None,
        text: str | None = None,
        start: bool = True,
    ) -> ScriptHost:
        """Load a script file or folder (or ``text`` under the name of ``path``)
        and, with ``start``, start it: its top-level code and ``on_start`` run
        before this returns, at the current tick.

        A relative ``path`` is read from ``root`` (the working directory when
        no root was given). A script that does not compile, or whose top-level
        code fails, raises ``ScriptSyntaxError``/``ScriptError`` with the
        file and line.
        """
        p = Path(path)
        if self.root is not None and not p.is_absolute():
            p = self.root / p
        host = self._session.runtime.load(p, options, name=name, namespace=namespace, text=text)
        self._session.hosts.append(host)
        if start:
            host.start()
            self._session.runtime.run_due()
        return host

    def advance(self, ticks: int = 1) -> int:
        """Run ``ticks`` world ticks, each followed by every script slice due
        by then (polls, sleeps, deferred handlers); return the current tick."""
        if ticks < 0:
            raise ConfigError(f"advance(ticks={ticks}): ticks must be >= 0")
        for _ in range(ticks):
            self._session.advance_virtual()
        return self.tick

    def advance_until(
        self, condition: Callable[[], object], *, max_ticks: int, what: str = ""
    ) -> int:
        """Advance tick by tick until ``condition()`` is true; return the tick.

        Fails with ``AssertionError`` (naming ``what`` and ``max_ticks``) when
        it is still false after ``max_ticks`` ticks.
        """
        for done in range(max_ticks + 1):
            if condition():
                return self.tick
            if done < max_ticks:
                self.advance()
        label = what or getattr(condition, "__name__", "condition")
        raise AssertionError(
            f"{label} still false after {max_ticks} ticks (tick {self.tick}); "
            f"scripts: {self._status_line()}"
        )

    def emit(self, type: str, data: Mapping[str, Any] | None = None,
             *, source: str | None = None) -> Event:
        """Emit an event as the host would (at the current tick), then run what
        became due (deferred handlers). Event-engine handlers have run when
        this returns, in either delivery mode."""
        event = self._session.runtime.bus.emit(type, data, source=source, tick=self.tick)
        self._session.runtime.run_due()
        return event

    def stop(self, script: ScriptRef | None = None) -> None:
        """Stop one script (or all), running ``on_stop``: its logs and shared
        values can be checked afterwards."""
        if script is None:
            self._session.stop_scripts()
        else:
            self.script(script).stop(wait=True)

    def close(self) -> None:
        """Stop every script and release the runtime (idempotent)."""
        self._session.close()

    def __enter__(self) -> Sim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- looking
    def shared(self, namespace: ScriptRef) -> SharedStore:
        """The shared values of a namespace: a script's name (or handle), or
        any namespace given to ``load(namespace=...)``."""
        if isinstance(namespace, ScriptHost):
            return namespace.shared  # type: ignore[no-any-return]
        return self._session.runtime.shared.namespace(namespace)

    def stats(self, script: ScriptRef) -> dict[str, Any]:
        """A copy of the script's stats panel."""
        return self.script(script).stats

    def status(self, script: ScriptRef) -> str:
        """``running``, ``stopped``, ``failed``... (see ``ScriptHost.status``)."""
        return self.script(script).status

    def logs(
        self,
        script: ScriptRef | None = None,
        *,
        level: str | None = None,
        contains: str | None = None,
    ) -> list[LogLine]:
        """Every log line so far (oldest first), filtered by script, exact
        level (``debug``/``info``/``warn``/``error``) and a substring."""
        if level is not None and level not in _LEVELS:
            raise ConfigError(f"level must be one of {', '.join(_LEVELS)}, got {level!r}")
        name = None if script is None else self.script(script).name
        return [
            line for line in self._logs
            if (name is None or line.script == name)
            and (level is None or line.level == level)
            and (contains is None or contains in line.msg)
        ]

    def emitted(
        self,
        type: str | None = None,
        *,
        source: ScriptRef | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Every committed event so far (oldest first), filtered.

        ``type`` is an event type or a pattern (``combat_*``); ``source`` a
        script (name or handle: the events it emitted) or a raw source string
        (``"host"``: the world's and ``emit``'s events); ``where`` keeps the
        events whose data has these field values.
        """
        src = self._source_of(source)
        return [
            e for e in self._events
            if (type is None or fnmatch.fnmatchcase(e.type, type))
            and (src is None or e.source == src)
            and (where is None or all(k in e.data and e.data[k] == v for k, v in where.items()))
        ]

    def _source_of(self, source: ScriptRef | None) -> str | None:
        if source is None:
            return None
        if isinstance(source, ScriptHost):
            return f"script:{source.name}"
        if source in self._session.runtime.scripts:
            return f"script:{source}"
        return source

    # ------------------------------------------------------------ asserting
    def assert_emitted(
        self,
        type: str,
        *,
        source: ScriptRef | None = None,
        where: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> list[Event]:
        """The matching events; ``AssertionError`` when there are none (or not
        exactly ``count``), listing what was emitted instead."""
        found = self.emitted(type, source=source, where=where)
        if (count is None and found) or (count is not None and len(found) == count):
            return found
        wanted = f"{count if count is not None else 'at least 1'} event(s) {type!r}"
        if source is not None:
            wanted += f" from {self._source_of(source)}"
        if where:
            wanted += f" with {dict(where)}"
        same_type = self.emitted(type)
        lines = [f"expected {wanted} by tick {self.tick}, found {len(found)}"]
        if same_type and len(same_type) != len(found):
            lines.append(f"{len(same_type)} {type!r} event(s) of any source/data, latest:")
            lines += ["  " + _describe(e) for e in same_type[-5:]]
        for e in found[:5]:
            lines.append("  matched " + _describe(e))
        by_type = Counter(e.type for e in self._events)
        lines.append(f"events by type: {dict(sorted(by_type.items()))}")
        raise AssertionError("\n".join(lines))

    def assert_not_emitted(self, type: str, *, source: ScriptRef | None = None,
                           where: Mapping[str, Any] | None = None) -> None:
        """``AssertionError`` listing the matching events if there is any."""
        found = self.emitted(type, source=source, where=where)
        if found:
            shown = "\n".join("  " + _describe(e) for e in found[:5])
            raise AssertionError(f"expected no {type!r} event, found {len(found)}:\n{shown}")

    def assert_logged(
        self, contains: str, *, script: ScriptRef | None = None, level: str | None = None
    ) -> LogLine:
        """The first log line containing ``contains``; ``AssertionError`` with
        the script's latest lines when there is none."""
        found = self.logs(script, level=level, contains=contains)
        if found:
            return found[0]
        recent = self.logs(script)[-10:]
        who = f" from {self.script(script).name}" if script is not None else ""
        at = f" at level {level}" if level is not None else ""
        shown = "\n".join(f"  [{ln.script} {ln.level} t={ln.tick}] {ln.msg}" for ln in recent)
        raise AssertionError(
            f"no log line{who}{at} contains {contains!r} by tick {self.tick}; "
            f"latest lines:\n{shown or '  (none)'}"
        )

    def assert_no_errors(self, *scripts: ScriptRef) -> None:
        """Every given script (default: all) is not failed and recorded no error."""
        hosts = [self.script(s) for s in scripts] or list(self.scripts.values())
        bad = [h for h in hosts if h.status == "failed" or h.errors]
        if bad:
            detail = "\n".join(f"  {h.name} ({h.status}): " + "; ".join(h.errors) for h in bad)
            raise AssertionError(f"script errors by tick {self.tick}:\n{detail}")

    def _status_line(self) -> str:
        return ", ".join(f"{n}={h.status}" for n, h in self.scripts.items()) or "none loaded"


class SimFactory(Protocol):
    """The ``moonbus_sim`` fixture's type: call it to get a fresh ``Sim``."""

    def __call__(
        self,
        app: Any = None,
        *,
        seed: int = 0,
        tick_seconds: float = 0.6,
        event_delivery: str = "immediate",
        root: str | Path | None = None,
    ) -> Sim: ...
