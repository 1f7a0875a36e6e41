"""The admin command registry: parse a command line, check it, run it.

One registry serves every front end (``rt.admin.run`` from Python, ``moonbus
admin`` on the command line, and RCON). Commands are kept in registration
order, which is the order ``help`` lists them in. Parsing is pure: a line is
split with ``shlex`` (so ``settings.set motd "hello world"`` works), the first
word names the command, and the argument count is checked against the
command's declared range before its handler runs.

``run`` raises ``AdminError`` for bad input; ``answer`` is what the text
front ends use: it never raises and turns an error into ``error: <message>``.

One registry, three front ends: a handler returns either its text, or an
``Answer`` holding the same text plus ``data``, the JSON-able value of the
same result (``call`` returns it). RCON and the CLI print ``text``; the HTTP
API (``moonbus.http``) sends ``data``, so no command is implemented twice and
the text answers stay exactly what they were. An ``Answer`` with
``unchanged=True`` says the command found its target already in the asked
state and did nothing (HTTP answers 409; the text front ends print the text
as before). Errors say what kind they are by their class (``AdminNotFoundError``,
``AdminStateError``, ``AdminUnavailableError``; a plain ``AdminError`` is bad
input), which each front end renders its way.

Thread safety: commands are registered at start-up; ``run`` may be called
from any thread (RCON runs handlers on a small thread pool), and every
handler must be safe for that.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moonbus.errors import AdminError, MoonbusError

__all__ = ["Answer", "Command", "CommandRegistry", "parse_int"]


@dataclass(frozen=True)
class Answer:
    """What a command answered: ``text`` for RCON and the CLI, ``data`` (a JSON-able
    value, or None when the command has only text) for the HTTP API, and
    ``unchanged`` when the target already was in the asked state."""

    text: str
    data: Any = None
    unchanged: bool = False


Handler = Callable[[Sequence[str]], "str | Answer"]
_log = logging.getLogger("moonbus.admin")


@dataclass(frozen=True)
class Command:
    """One admin command: its name, usage line, help text and argument range."""

    name: str
    usage: str
    help: str
    handler: Handler
    min_args: int = 0
    max_args: int = 0


def parse_int(value: str, what: str) -> int:
    """An integer argument, or ``AdminError`` naming the argument and the bad text."""
    try:
        return int(value)
    except ValueError:
        raise AdminError(f"{what} must be an integer, got {value!r}") from None


class CommandRegistry:
    """Named admin commands in a deterministic (registration) order."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self.register("help", self._help, usage="help", help="list the commands, one a line")

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        usage: str,
        help: str,
        args: tuple[int, int] = (0, 0),
    ) -> None:
        """Add a command; ``args`` is the (min, max) number of arguments."""
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"bad command name {name!r}")
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered")
        self._commands[name] = Command(name, usage, help, handler, args[0], args[1])

    def names(self) -> list[str]:
        """Command names in registration order."""
        return list(self._commands)

    def command(self, name: str) -> Command:
        """The command called ``name``, or ``AdminError``."""
        try:
            return self._commands[name]
        except KeyError:
            raise AdminError(f"unknown command {name!r}; try 'help'") from None

    def _help(self, args: Sequence[str]) -> str:
        width = max(len(c.usage) for c in self._commands.values())
        return "\n".join(f"{c.usage.ljust(width)}  {c.help}" for c in self._commands.values())

    @staticmethod
    def split(line: str) -> list[str]:
        """Split a command line into words (shell-like quoting)."""
        try:
            return shlex.split(line)
        except ValueError as exc:
            raise AdminError(f"cannot parse command line: {exc}") from None

    def run(self, line: str | Sequence[str]) -> str:
        """Run one command; raises ``AdminError`` on bad input or failure."""
        return self.call(line).text

    def call(self, line: str | Sequence[str]) -> Answer:
        """Run one command and return its whole ``Answer`` (text and data); raises
        ``AdminError`` (or a subclass naming the kind of error) like ``run``."""
        words = self.split(line) if isinstance(line, str) else list(line)
        if not words:
            raise AdminError("empty command; try 'help'")
        command = self.command(words[0])
        args = words[1:]
        if not command.min_args <= len(args) <= command.max_args:
            raise AdminError(f"usage: {command.usage}")
        try:
            result = command.handler(args)
        except AdminError:
            raise
        except (MoonbusError, KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise AdminError(f"{command.name}: {message}") from exc
        return result if isinstance(result, Answer) else Answer(result)

    def answer(self, line: str) -> str:
        """Like ``run`` but never raises: errors come back as ``error: ...``."""
        try:
            return self.run(line)
        except AdminError as exc:
            return f"error: {exc}"
        except Exception as exc:  # a bug in a command must not kill the front end
            _log.exception("admin command %r failed", line)
            return f"error: internal error: {type(exc).__name__}: {exc}"
