"""``moonbus stubs``: LuaLS definitions and a luacheck config for script authors.

Writes ``moonbus_meta/moonbus.lua`` (``---@meta``), ``.luarc.json`` and
``.luacheckrc`` into ``--out`` (see ``moonbus.host.stubs``), for the globals
of the demo world's APIs. Existing files are replaced; nothing else in the
folder is touched.

Threads: runs on the main thread.
"""

from __future__ import annotations

from pathlib import Path

import click

from moonbus.host.stubs import render_stubs
from moonbus.world.events import EVENT_TYPES
from moonbus.world.world import World

__all__ = ["stubs_command"]


@click.command("stubs")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to write the files into (created if missing).")
def stubs_command(out: Path) -> None:
    """Write LuaLS definitions (.luarc.json + moonbus_meta/) and a .luacheckrc for the
    globals a script sees, so editors complete them and luacheck flags typos."""
    world = World(seed=0, emit=lambda *args, **kwargs: None)
    files = render_stubs(world.apis(), EVENT_TYPES).files
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        click.echo(f"wrote {path}")
