"""The evaluating side of ``moonbus repl``: one script's sandbox, fed line by line.

``Repl`` is the real script host, not a look-alike: a stepped ``Session``
(the app's world, the demo world by default, in virtual time, as ``moonbus
run --tick-ms 0``) with one
script, ``repl``, loaded from an empty source and started. Each complete
chunk the user types is compiled into that script's *event engine*
environment and run there under the handler time limit
(``HostSettings.handler_timeout``), the memory limit and the sandbox every
script has: the app's APIs, ``shared`` (namespace ``repl``), ``events``,
``logger``, ``stats``, and nothing of Python or the file system. A handler
registered with ``events.on`` from the prompt is an event-engine handler, so
it runs the moment an event is emitted (``events.emit`` or the world's events
during ``:tick``).

Reading and printing follow the standalone ``lua`` prompt: a line is first
tried as an expression (``return <line>``) and its values printed, else as a
statement; a chunk whose syntax error ends at ``<eof>`` waits for more lines.
Locals are kept between lines (see ``moonbus.cli.repl_lua``). Lines starting
with ``:`` are meta-commands (``:tick N``, ``:events N``, ``:help``,
``:quit``). ``feed`` never does I/O: it returns what to print, so the
terminal loop (``moonbus.cli.repl_cmd``) and the tests share it.

Threads: everything runs on the thread calling ``feed`` (the runtime is
stepped; the watchdog thread only interrupts a chunk past its time limit).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from moonbus.app import App
from moonbus.bus import Event
from moonbus.cli.repl_lua import FORMATTER, is_incomplete, promote_locals
from moonbus.errors import ScriptError, ScriptSyntaxError
from moonbus.host.engine_side import ScriptEngine
from moonbus.runtime import LogLine
from moonbus.session.session import Session

__all__ = ["HELP", "Repl", "Reply"]

HELP = """\
Lua 5.4 in a moonbus script's sandbox (the app's APIs, shared, events, logger, stats).
  <expression>       print its value(s)          = <expression>  the same
  <statement>        run it (a top-level `local` is kept for the next lines)
  :tick [N]          advance the world N ticks (default 1) in virtual time
  :events [N]        the last N committed events (default 10)
  :help              this text
  :quit              leave (also Ctrl-D)"""

CHUNK_NAME = "stdin"


@dataclass(frozen=True)
class Reply:
    """What one fed line gives: text for stdout, an error for stderr, whether
    the chunk needs more lines, whether the user asked to quit."""

    output: str = ""
    error: str = ""
    more: bool = False
    quit: bool = False


class Repl:
    """One REPL session: a world, a runtime and the ``repl`` script to evaluate in."""

    def __init__(self, *, app: App | None = None, seed: int = 0, tick_seconds: float = 0.6,
                 width: int = 4000, events_kept: int = 1000) -> None:
        self.width = width
        self._session = Session([], seed=seed, app=app, virtual=True, tick_seconds=tick_seconds)
        self.app = self._session.app
        try:
            self._pending: list[str] = []
            self._events: deque[Event] = deque(maxlen=events_kept)
            self._session.add_log_sink(self._on_log)
            self._session.runtime.bus.on("*", self._events.append, owner="moonbus-repl")
            self._session.start()
            runtime = self._session.runtime
            self.host = runtime.load("repl.lua", text="", name="repl")
            self._session.hosts.append(self.host)
            self.host.start()
            runtime.run_due()
            self._side = self._event_side()
            engine = self._side.engine
            maker = engine.compile(FORMATTER, "(repl printer)", engine.new_env())
            limit = runtime.settings.lifecycle_timeout
            self._printer = engine.call(maker, limit=limit)[0]
        except BaseException:
            self._session.close()
            raise
        self._buffer: list[str] = []

    def _event_side(self) -> ScriptEngine:
        """The ``repl`` script's event engine. ``ScriptHost`` keeps its two
        engines private (scripts never need them); the REPL is the one tool
        that evaluates text inside a running script, so it reads the
        attribute here rather than widening the host's public surface."""
        side: ScriptEngine | None = self.host._event
        if side is None:
            raise ScriptError("the repl script did not start")
        return side

    def _on_log(self, line: LogLine) -> None:
        self._pending.append(f"[{line.level}] {line.msg}")

    @property
    def tick(self) -> int:
        return int(self._session.tick)

    @property
    def continuing(self) -> bool:
        """True while an incomplete chunk waits for more lines."""
        return bool(self._buffer)

    # ---------------------------------------------------------------- feeding
    def feed(self, line: str) -> Reply:
        """Take one line of input; evaluate once the chunk is complete."""
        if not self._buffer:
            stripped = line.strip()
            if stripped.startswith(":"):
                return self._meta(stripped[1:].split())
            if not stripped:
                return Reply()
            if stripped.startswith("="):  # Lua 5.1's "= expr"
                line = "return " + stripped[1:]
        self._buffer.append(line)
        return self._evaluate("\n".join(self._buffer))

    def interrupt(self) -> None:
        """Drop an incomplete chunk (Ctrl-C at a continuation prompt)."""
        self._buffer.clear()

    def _compile(self, source: str) -> Any:
        engine, env = self._side.engine, self._side.env
        try:
            return engine.compile("return " + source, CHUNK_NAME, env)
        except ScriptSyntaxError:
            pass
        return engine.compile(promote_locals(source), CHUNK_NAME, env)

    def _evaluate(self, source: str) -> Reply:
        try:
            func = self._compile(source)
        except ScriptSyntaxError as exc:
            if is_incomplete(str(exc)):
                return Reply(more=True)
            self._buffer.clear()
            return self._reply(error=str(exc))
        self._buffer.clear()
        runtime = self._session.runtime
        try:
            _, text = self._side.engine.call(self._printer, func, self.width,
                                             limit=runtime.settings.handler_timeout)
        except ScriptError as exc:
            runtime.run_due()
            return self._reply(error=str(exc))
        runtime.run_due()  # what the line made due: deferred handlers, queued events
        return self._reply(output=str(text))

    def _reply(self, *, output: str = "", error: str = "") -> Reply:
        lines = self._pending + ([output] if output else [])
        self._pending = []
        return Reply(output="\n".join(lines), error=error)

    # ---------------------------------------------------------- meta-commands
    def _meta(self, words: list[str]) -> Reply:
        name, args = (words[0], words[1:]) if words else ("", [])
        if name in ("q", "quit", "exit"):
            return Reply(quit=True)
        if name in ("h", "help", "?"):
            return Reply(output=HELP)
        if name in ("tick", "t", "events", "e"):
            count = self._count(args, default=1 if name in ("tick", "t") else 10)
            if count is None:
                return Reply(error=f":{name} takes one positive whole number, got {' '.join(args)}")
            if name in ("tick", "t"):
                for _ in range(count):
                    self._session.advance_virtual()
                return self._reply(output=f"tick {self.tick}")
            shown = list(self._events)[-count:]
            return self._reply(output="\n".join(
                f"#{e.seq} t={e.tick} {e.type} {dict(e.data)} ({e.source})" for e in shown
            ) or "(no events yet)")
        return Reply(error=f"unknown command :{name} (:help lists them)")

    @staticmethod
    def _count(args: list[str], *, default: int) -> int | None:
        if not args:
            return default
        if len(args) == 1 and args[0].isdigit() and int(args[0]) > 0:
            return int(args[0])
        return None

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Stop the script and release the runtime (idempotent)."""
        self._session.close()

    def __enter__(self) -> Repl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
