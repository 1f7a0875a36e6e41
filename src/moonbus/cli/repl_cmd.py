"""``moonbus repl``: an interactive Lua prompt inside a script's sandbox (SPEC §12).

The evaluation is ``moonbus.cli.repl_core.Repl``; this module is only the
terminal around it:

* on a terminal: a banner, the prompts ``> `` and ``>> `` (continuation),
  line editing and history through ``readline`` when Python has it (history
  kept in ``~/.moonbus_repl_history``, or the file named by
  ``MOONBUS_REPL_HISTORY``; set it empty to keep none), Ctrl-C drops the
  current chunk, Ctrl-D leaves;
* from a pipe (stdin not a terminal): no banner and no prompts, each result
  printed as it comes; the exit code is 1 when any line failed, so a piped
  session can be checked by a script.

Results go to stdout, errors to stderr (as the standalone ``lua`` does).

Threads: runs on the main thread.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import ModuleType

import click

from moonbus.cli.app_option import app_option, resolve_app
from moonbus.cli.repl_core import Repl

__all__ = ["repl_command"]

HISTORY_ENV = "MOONBUS_REPL_HISTORY"
HISTORY_LENGTH = 1000


def _readline() -> ModuleType | None:
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input()
        return None
    return readline


def _history_file() -> Path | None:
    configured = os.environ.get(HISTORY_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    return Path.home() / ".moonbus_repl_history"


@click.command("repl")
@app_option
@click.option("--seed", type=int, default=0, show_default=True, help="World seed.")
@click.option("--tick-ms", type=click.IntRange(min=1), default=600, show_default=True,
              help="Virtual milliseconds one :tick advances the clock.")
def repl_command(app_spec: str | None, seed: int, tick_ms: int) -> None:
    """An interactive Lua prompt in a script's sandbox and limits, against the demo
    world or --app.

    Expressions print their values; a top-level `local` is kept for the next
    lines; :tick N advances the world in virtual time; :help lists the
    commands. Also reads lines from a pipe:

      echo 'return players:local_player():name()' | moonbus repl
    """
    app = resolve_app(app_spec)
    interactive = sys.stdin.isatty()
    failed = False
    with Repl(app=app, seed=seed, tick_seconds=tick_ms / 1000) as repl:
        history = _start_history() if interactive else None
        if interactive:
            click.echo(f"moonbus repl: Lua 5.4, {app.name} (seed {seed}). "
                       ":help for commands, Ctrl-D to quit.")
        try:
            while True:
                try:
                    line = _read(interactive, ">> " if repl.continuing else "> ")
                except KeyboardInterrupt:
                    repl.interrupt()
                    click.echo("")
                    continue
                if line is None:
                    break
                try:
                    reply = repl.feed(line)
                except KeyboardInterrupt:
                    click.echo("interrupted", err=True)
                    continue
                if reply.output:
                    click.echo(reply.output)
                if reply.error:
                    failed = True
                    click.echo(reply.error, err=True)
                if reply.quit:
                    break
            if repl.continuing:
                failed = True
                click.echo("input ended inside an unfinished chunk", err=True)
        finally:
            if history is not None:
                _save_history(history)
    if failed and not interactive:
        raise SystemExit(1)


def _read(interactive: bool, prompt: str) -> str | None:
    """One line without its newline, or None at the end of input."""
    if interactive:
        try:
            return input(prompt)
        except EOFError:
            click.echo("")
            return None
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def _start_history() -> Path | None:
    readline = _readline()
    path = _history_file()
    if readline is None or path is None:
        return None
    readline.set_history_length(HISTORY_LENGTH)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    return path


def _save_history(path: Path) -> None:
    readline = _readline()
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)
