"""The admin command registry: parse a command line, check it, run it.

One registry serves every front end (``rt.admin.run`` from Python, ``moonbus
admin`` on the command line, and RCON). Commands are kept in registration
order, which is the order ``help`` lists them in. Parsing is pure: a line is
split with ``shlex`` (so ``settings.set motd "hello world"`` works), the first
word names the command, and the argument count is checked against the
command's declared range before its handler runs.

``run`` raises ``AdminError`` for bad input; ``answer`` is what the network
front ends use: it never raises and turns an error into ``error: <message>``.

Thread safety: commands are registered at start-up; ``run`` may be called
from any thread (RCON runs handlers on a small thread pool), and every
handler must be safe for that.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from moonbus.errors import AdminError, MoonbusError

__all__ = ["Command", "CommandRegistry", "parse_int"]

Handler = Callable[[Sequence[str]], str]
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
        words = self.split(line) if isinstance(line, str) else list(line)
        if not words:
            raise AdminError("empty command; try 'help'")
        command = self.command(words[0])
        args = words[1:]
        if not command.min_args <= len(args) <= command.max_args:
            raise AdminError(f"usage: {command.usage}")
        try:
            return command.handler(args)
        except AdminError:
            raise
        except (MoonbusError, KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise AdminError(f"{command.name}: {message}") from exc

    def answer(self, line: str) -> str:
        """Like ``run`` but never raises: errors come back as ``error: ...``."""
        try:
            return self.run(line)
        except AdminError as exc:
            return f"error: {exc}"
        except Exception as exc:  # a bug in a command must not kill the front end
            _log.exception("admin command %r failed", line)
            return f"error: internal error: {type(exc).__name__}: {exc}"
