"""``moonbus stubs``: LuaLS definitions and a luacheck config for script authors.

Writes ``moonbus_meta/moonbus.lua`` (``---@meta``), ``.luarc.json`` and
``.luacheckrc`` into ``--out`` (see ``moonbus.host.stubs``), for the globals
and event types of the app (the demo world, or ``--app MODULE:ATTR``).
Existing files are replaced; nothing else in the folder is touched.

Threads: runs on the main thread.
"""

from __future__ import annotations

from pathlib import Path

import click

from moonbus.app import event_type_table, probe_apis
from moonbus.cli.app_option import app_option, resolve_app
from moonbus.host.stubs import render_stubs

__all__ = ["stubs_command"]


@click.command("stubs")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to write the files into (created if missing).")
@app_option
def stubs_command(out: Path, app_spec: str | None) -> None:
    """Write LuaLS definitions (.luarc.json + moonbus_meta/) and a .luacheckrc for the
    globals a script sees, so editors complete them and luacheck flags typos."""
    app = resolve_app(app_spec)
    files = render_stubs(probe_apis(app), event_type_table(app)).files
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        click.echo(f"wrote {path}")
