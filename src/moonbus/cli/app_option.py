"""The ``--app MODULE:ATTR`` option shared by ``run``, ``serve`` and ``check``.

One definition, so the three commands name, document and resolve it alike:
omitted means the demo world (``moonbus.app.DEFAULT_APP``); a bad value is a
usage error (exit 2) before anything starts. Runs on the control thread.
"""

from __future__ import annotations

import click

from moonbus.app import DEFAULT_APP, App, load_app
from moonbus.errors import ConfigError

__all__ = ["app_option", "resolve_app"]

app_option = click.option(
    "--app", "app_spec", default=None, metavar="MODULE:ATTR",
    help=f"The game to drive: an app object, imported like uvicorn does (the current "
    f"directory first). Default: the demo world ({DEFAULT_APP}).",
)


def resolve_app(spec: str | None) -> App:
    """The app ``spec`` names; ``click.UsageError`` saying what is wrong with it."""
    try:
        return load_app(spec)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
