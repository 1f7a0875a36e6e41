"""Compiling (and linting) scripts without running them.

Used by ``moonbus check`` and by ``moonbus run`` before it starts anything:
every file of every script is compiled in one probe engine from the sandbox
factory (the same Lua the scripts will run in), so a syntax error is reported
as ``file:line: message`` with the path the user typed, and nothing starts.

A folder script is its ``main.lua`` plus every other ``.lua`` file in the
folder (the modules ``require`` may load), each compiled on its own.

Compiling is limited as in the runtime (SPEC §4b): each file compiles under
``time_limit`` seconds of CPU time (default: the runtime's lifecycle limit)
and within the size cap, so a file built to be costly to parse is reported
as a problem instead of hanging the check.

Threads: a ``ScriptChecker`` owns its probe engine and is used by one thread.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from moonbus.cli.event_lint import event_uses, lint_events
from moonbus.cli.lint import assigned_globals, lint_globals
from moonbus.errors import ScriptError, ScriptTimeout
from moonbus.host.context import HostSettings
from moonbus.host.source import ScriptSource
from moonbus.lua.compile_limits import chunk_display
from moonbus.lua.sandbox import SandboxFactory
from moonbus.session.session import ScriptPlan

__all__ = [
    "MOONBUS_GLOBALS",
    "Problem",
    "ScriptChecker",
    "ScriptFile",
    "compile_problems",
    "script_files",
]

#: The globals ``host/script_env.lua`` installs in both engines (``require``
#: only for folder scripts). A test checks this list against a real engine.
MOONBUS_GLOBALS: Final = ("events", "shared", "logger", "stats", "options", "sleep", "time",
                          "print")
_LIBRARIES: Final = ("string", "table", "math", "utf8", "os", "coroutine")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: ``where`` is ``path:line`` or ``path`` (or None for no file)."""

    where: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{tag}{self.message}"


@dataclass(frozen=True, slots=True)
class ScriptFile:
    """One Lua file of a script: the path to show, the runtime's chunk name, its text."""

    display: str
    chunkname: str
    text: str
    is_main: bool


def script_files(source: ScriptSource, display: str) -> list[ScriptFile]:
    """The files of ``source``: the main chunk first, then a folder's modules by path.

    ``display`` is the path as the user gave it. Modules are read with the
    host's own reader (size limit, UTF-8, confinement); one that cannot be
    read raises ``ScriptError``/``ConfigError`` naming it.
    """
    if source.folder is None:
        return [ScriptFile(display, source.chunkname, source.text, True)]
    root = Path(display)
    files = [ScriptFile(str(root / "main.lua"), source.chunkname, source.text, True)]
    folder = source.folder
    for path in sorted(folder.rglob("*.lua")):
        relative = path.relative_to(folder)
        if relative == Path("main.lua"):
            continue
        module = ".".join(relative.with_suffix("").parts)
        try:
            text, chunkname = source.read_module(module)
        except ScriptError:
            # Not loadable by require (odd file name): compile it as it is anyway.
            text = path.read_text("utf-8")
            chunkname = f"{folder.name}/{relative.as_posix()}"
        files.append(ScriptFile(str(root / relative), chunkname, text, False))
    return files


def _syntax_problem(f: ScriptFile, exc: ScriptError) -> Problem:
    message = exc.message
    if exc.where and message.startswith(exc.where + ":"):
        line = exc.where.rsplit(":", 1)[1]
        return Problem(f"{f.display}:{line}", message[len(exc.where) + 1 :].strip())
    for prefix in (chunk_display("@" + f.chunkname), f.chunkname):
        if message.startswith(prefix + ": "):  # a message without a line (nesting, size)
            return Problem(f.display, message[len(prefix) + 2 :])
    return Problem(f.display, message)


class ScriptChecker:
    """Compiles and lints script files in one probe engine (owned; ``close`` it)."""

    def __init__(
        self,
        factory: SandboxFactory,
        api_names: Collection[str] = (),
        *,
        event_types: Mapping[str, str] | None = None,
        app_name: str = "game",
        time_limit: float = HostSettings.lifecycle_timeout,
    ) -> None:
        """``api_names``: the host's Lua globals (``moonbus.app.api_names_of(app)``),
        known to the lint besides the sandbox's and moonbus's own.
        ``event_types``: the host's declared ``events.EventType`` table
        (``moonbus.app.event_type_table(app)``); given, the lint also warns
        about event names no one declared (``moonbus.cli.event_lint``).
        ``time_limit``: seconds of CPU time one file may take to compile."""
        self.api_names: frozenset[str] = frozenset(api_names)
        self.event_types = None if event_types is None else dict(event_types)
        self.app_name = app_name
        self._emitted: set[str] = set()
        self._time_limit = time_limit
        self._engine = factory.create("moonbus-check", memory_limit=None)
        with self._engine.lock:
            env = self._engine.new_env()
            sandbox = {str(k) for k in env}
            self._libraries = {
                name: frozenset(str(k) for k in env[name]) for name in _LIBRARIES
            }
        self._known = frozenset(sandbox | set(MOONBUS_GLOBALS) | set(api_names) | {"_ENV"})

    def compile(self, source: ScriptSource, display: str) -> list[Problem]:
        """Syntax errors of every file of ``source`` (empty when all compile)."""
        problems: list[Problem] = []
        for f in script_files(source, display):
            try:
                self._engine.compile(
                    f.text, f.chunkname, self._engine.new_env(), limit=self._time_limit
                )
            except ScriptTimeout:
                problems.append(Problem(
                    f.display,
                    f"compiling took longer than the time limit of {self._time_limit:g} s "
                    "(a source this costly to parse would not load either)",
                ))
            except ScriptError as exc:
                problems.append(_syntax_problem(f, exc))
        return problems

    def learn_emitted(self, sources: Iterable[tuple[ScriptSource, str]]) -> None:
        """Count the event names these scripts emit as declared (custom events
        one checked script sends another); call before ``lint``."""
        for source, display in sources:
            for f in script_files(source, display):
                self._emitted |= event_uses(f.text).emitted

    def lint(self, source: ScriptSource, display: str) -> list[Problem]:
        """Warnings about globals (see ``moonbus.cli.lint``); call after ``compile``."""
        files = script_files(source, display)
        known = set(self._known)
        if source.folder is not None:
            known.add("require")
        for f in files:  # a folder's modules share the script's globals
            known |= assigned_globals(f.text)
        problems: list[Problem] = []
        for f in files:
            findings = lint_globals(f.text, known, self._libraries, self.api_names)
            if self.event_types is not None:
                uses = event_uses(f.text)
                emitted = self._emitted | uses.emitted
                findings += lint_events(uses, self.event_types, emitted, self.app_name)
                findings.sort(key=lambda finding: finding.line)
            for finding in findings:
                problems.append(Problem(f"{f.display}:{finding.line}", finding.message, "warning"))
        return problems

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> ScriptChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compile_problems(plans: Sequence[ScriptPlan]) -> list[Problem]:
    """Syntax errors of every file of every planned script (empty when all
    compile), found before a runtime exists (``moonbus run``, ``serve``, ``watch``)."""
    with SandboxFactory(memory_limit=None) as factory, ScriptChecker(factory) as checker:
        return [problem for plan in plans for problem in checker.compile(plan.source, plan.display)]
