"""``moonbus check``: compile and lint scripts without running them (SPEC §8).

Prints one line per problem: ``file:line: message`` for a syntax error,
``file:line: warning: message`` for a lint warning (see ``moonbus.cli.lint``),
and a one-line tally at the end (not with ``--quiet``). Exit 2 when a script
is missing, unreadable, too large or does not compile (also when compiling
it takes longer than ``--compile-timeout``); warnings alone exit 0 (or 1
with ``--strict``).

Threads: runs on the main thread; owns its probe engine.
"""

from __future__ import annotations

import contextlib
import math

import click

from moonbus.app import api_names_of, event_type_table
from moonbus.cli.app_option import app_option, resolve_app
from moonbus.cli.script_check import Problem, ScriptChecker
from moonbus.errors import ConfigError, ScriptError
from moonbus.host.context import HostSettings
from moonbus.host.source import ScriptSource, load_source
from moonbus.lua.sandbox import SandboxFactory

__all__ = ["check_command"]


def _finite(seconds: float) -> float:
    # FloatRange lets NaN through (every comparison with it is false).
    if not math.isfinite(seconds):
        raise click.BadParameter(f"must be a finite number of seconds, not {seconds!r}")
    return seconds


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.command("check")
@click.argument("scripts", nargs=-1, required=True, metavar="SCRIPT...")
@click.option("--no-lint", is_flag=True, help="Only compile; skip the lint warnings.")
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings.")
@click.option("--quiet", "-q", is_flag=True, help="Only the problems, no tally line.")
@click.option(
    "--compile-timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=HostSettings.lifecycle_timeout,
    show_default=True,
    callback=lambda ctx, param, value: _finite(value),
    help="Seconds of CPU time one file may take to compile (as the runtime allows).",
)
@app_option
@click.pass_context
def check_command(
    ctx: click.Context, scripts: tuple[str, ...], no_lint: bool, strict: bool, quiet: bool,
    compile_timeout: float, app_spec: str | None,
) -> None:
    """Compile and lint SCRIPT... (.lua files or script folders) without running them.

    The lint knows the game the scripts are for (the demo world, or --app):
    a global a script reads that the game does not register and no script
    sets is a warning (a misspelt API name, say), and so is an event name
    that the game does not declare and no checked script emits.
    """
    app = resolve_app(app_spec)
    api_names = api_names_of(app)
    errors = 0
    warnings = 0
    with SandboxFactory(memory_limit=None) as factory, \
            ScriptChecker(factory, api_names, event_types=event_type_table(app),
                          app_name=app.name, time_limit=compile_timeout) as checker:
        # Compile everything first: the lint (Python, linear but far slower
        # than Lua's parser) then reads only sources that compiled, so a file
        # built to be costly to parse costs the check its compile time limit.
        checked: list[tuple[str, ScriptSource | None, list[Problem]]] = []
        for path in scripts:
            try:
                source = load_source(path)
                checked.append((path, source, checker.compile(source, path)))
            except (ConfigError, ScriptError) as exc:
                checked.append((path, None, [Problem(None, str(exc))]))
        if not no_lint:
            with contextlib.suppress(ConfigError, ScriptError):  # reported below, per script
                checker.learn_emitted((read, path) for path, read, problems in checked
                                      if read is not None and not problems)
        for path, read, problems in checked:
            if read is not None and not problems and not no_lint:
                try:
                    problems = checker.lint(read, path)
                except (ConfigError, ScriptError) as exc:
                    problems = [Problem(None, str(exc))]
            for problem in problems:
                click.echo(str(problem))
                if problem.severity == "error":
                    errors += 1
                else:
                    warnings += 1
    if not quiet:
        click.echo(
            f"checked {_plural(len(scripts), 'script')}: {_plural(errors, 'error')}, "
            f"{_plural(warnings, 'warning')}",
            err=True,
        )
    if errors:
        ctx.exit(2)
    ctx.exit(1 if strict and warnings else 0)
