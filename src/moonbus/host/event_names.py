"""Run-time warnings about event names no one declared (SPEC §10).

``moonbus check`` lints literal names before a run (``moonbus.cli.
event_lint``); this is the same promise while the game runs, for names built
at run time too. When the host declared its event types
(``Runtime(event_types=...)``), a script's ``events:on("gem_colected", ...)``
would subscribe to nothing, silently. Instead the runtime logs one warning
per name per script, naming the name, the script, the ``file:line`` of the
call, and the closest declared name (``difflib``).

Declared: the host's types, moonbus's own ``script:*`` notifications, every
name a loaded script's source emits with a literal ``events:emit("name")``
(so a listener loaded before its emitter is not warned), and from then on
every name a script emits at run time. Patterns (``"*"``, ``"player:*"``) are
never judged.

Bounded: at most ``HostSettings.max_event_names`` names are learned from
scripts (a script emitting ``"x" .. seq`` cannot grow the set for ever); past
it the checker stops warning, and says so once, rather than warn about names
it could no longer learn. ``warnings`` counts the warnings logged
(``Runtime.script_event_statistics().undeclared_event_names``).

Threads: any (scripts load and subscribe on several threads); one lock.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterable

from moonbus.lua.event_uses import event_uses

__all__ = ["EventNameChecker"]

# (script, level, message)
Warn = Callable[[str, str, str], None]


class EventNameChecker:
    """Knows the declared event names and warns about the others."""

    def __init__(self, declared: Iterable[str], *, max_names: Callable[[], int],
                 warn: Warn) -> None:
        self._declared = frozenset(declared)
        self._learned: set[str] = set()
        self._warned: set[tuple[str, str]] = set()
        self._max_names = max_names
        self._warn = warn
        self._lock = threading.Lock()
        self._full = False
        self.warnings = 0

    @property
    def learned(self) -> int:
        """How many names were learned from scripts (bounded by max_event_names)."""
        return len(self._learned)

    def known(self, name: str) -> bool:
        """Whether ``name`` is declared, learned, or a pattern."""
        return name.endswith("*") or name in self._declared or name in self._learned

    def learn(self, name: str) -> None:
        """A script emits ``name``: it is declared from now on."""
        if name in self._declared or name in self._learned:
            return
        with self._lock:
            if len(self._learned) < self._max_names():
                self._learned.add(name)
            elif not self._full:
                self._full = True
                self._warn("runtime", "warn",
                           f"event names: {len(self._learned)} names learned from scripts "
                           f"(max_event_names): no more undeclared-name warnings")

    def learn_source(self, text: str) -> None:
        """The literal names a script's source emits (at load, before it runs)."""

        for name in event_uses(text).emitted:
            self.learn(name)

    def undeclared(self, script: str, name: str, where: str) -> None:
        """A script subscribed to ``name``, which is not known: warn once per
        name per script."""
        if self.known(name):
            return
        with self._lock:
            if self._full or (script, name) in self._warned:
                return
            if len(self._warned) >= self._max_names():
                return
            self._warned.add((script, name))
            self.warnings += 1
            candidates = sorted(self._declared | self._learned)
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        at = f" at {where.rstrip(': ')}" if where.strip() else ""
        self._warn(script, "warn",
                   f"events:on({name!r}){at}: no one declared this event name, so the "
                   f"handler never runs{hint}")
