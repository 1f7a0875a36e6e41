"""The ``moonbus`` command group, with one-line error messages.

Click prints a usage error as a usage line, a hint and the message. moonbus
prints exactly one line on stderr, ``Error: <message> (try 'moonbus run
--help')``, and exits with the error's code (2 for bad usage), so scripts and
CI logs stay readable (SPEC §8 "Bad input").

Threads: the main thread runs a command; nothing here keeps state.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

__all__ = ["MoonbusGroup"]


def _one_line(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (try '{ctx.command_path} --help')"
    return f"Error: {message}"


class MoonbusGroup(click.Group):
    """A click group whose errors are one line each (see the module docstring)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)
            _exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(_one_line(exc), err=True)
            _exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            _exit(1)
        _exit(result if isinstance(result, int) else 0)


def _exit(code: int) -> NoReturn:
    sys.exit(code)
