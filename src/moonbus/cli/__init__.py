"""The ``moonbus`` command line (SPEC §8).

One module per command, each defining a click command registered on the
group below; adding a command means adding its module and one
``cli.add_command`` line here. ``cli`` is a command definition, not state:
every invocation builds its own runtime, world and stores.
"""

from __future__ import annotations

import click

from moonbus.cli.admin_cmd import admin_command
from moonbus.cli.bench_cmd import bench_command
from moonbus.cli.check import check_command
from moonbus.cli.diagnosis import version_line
from moonbus.cli.doctor_cmd import doctor_command
from moonbus.cli.events_cmd import events_command
from moonbus.cli.group import MoonbusGroup
from moonbus.cli.repl_cmd import repl_command
from moonbus.cli.replay_cmd import replay_command
from moonbus.cli.run import run_command
from moonbus.cli.serve import serve_command
from moonbus.cli.stubs_cmd import stubs_command

__all__ = ["cli", "main"]


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: moonbus's version (installed metadata) with lupa's and Lua's."""
    if value and not ctx.resilient_parsing:
        click.echo(version_line())
        ctx.exit()


@click.group("moonbus", cls=MoonbusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version,
              help="Show the moonbus, lupa and Lua versions and exit.")
def cli() -> None:
    """moonbus: event-driven Lua scripts for Python games.

    Try: moonbus run examples/mining.lua --ticks 300 --tick-ms 0
    """


cli.add_command(run_command)
cli.add_command(check_command)
cli.add_command(admin_command)
cli.add_command(events_command)
cli.add_command(bench_command)
cli.add_command(serve_command)
cli.add_command(stubs_command)
cli.add_command(doctor_command)
cli.add_command(repl_command)
cli.add_command(replay_command)


def main() -> None:
    """Console-script entry point (``moonbus``)."""
    cli(prog_name="moonbus")
