"""``moonbus replay FILE`` and the ``--record FILE`` option of ``run`` and ``serve`` (SPEC §12).

``replay`` prints ``identical: ...`` with counts (exit 0) or the first
divergence: its kind, seq and tick in the recording, the script, expected
and actual (exit 1); ``--format json`` prints one JSON object instead. A
file that is not a recording, or an unknown ``--script`` name, is exit 2.
See ``moonbus.replay`` for what is recorded and compared.

Threads: the command runs on the main thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from moonbus.app import DEFAULT_APP
from moonbus.errors import ConfigError

__all__ = ["note_app", "record_option", "replay_command"]

record_option = click.option(
    "--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Record the run in this file (SQLite) for `moonbus replay`.")


def note_app(session: Any, app_spec: str | None) -> None:
    """Tell the session's recorder (if any) which ``--app`` ran (information only:
    a replay does not import it)."""
    recorder = getattr(session, "recorder", None)
    if recorder is not None:
        recorder.note(app={"spec": app_spec or DEFAULT_APP, "name": session.app.name})


def _swaps(texts: tuple[str, ...]) -> dict[str, str]:
    swaps: dict[str, str] = {}
    for text in texts:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(f"--script {text!r}: write NAME=PATH, e.g. mining=mining_v2.lua")
        swaps[name] = path
    return swaps


@click.command("replay")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--script", "script_texts", multiple=True, metavar="NAME=PATH",
              help="Replay with this file instead of the recorded script NAME (repeatable).")
@click.option("--until", type=click.IntRange(min=1), default=None, metavar="SEQ",
              help="Stop at the tick of event SEQ; compare only up to it.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.pass_context
def replay_command(ctx: click.Context, file: Path, script_texts: tuple[str, ...],
                   until: int | None, fmt: str) -> None:
    """Run the scripts of a recording (moonbus run --record FILE) again in virtual
    time and compare what they emit, call and end with.

    \b
    Examples:
      moonbus replay run.mbrec
      moonbus replay run.mbrec --script mining=mining_v2.lua
      moonbus replay run.mbrec --until 500 --format json

    Exit codes: 0 identical, 1 a divergence, 2 bad usage or not a recording.
    """
    from moonbus.replay.replayer import replay

    swaps = _swaps(script_texts)
    try:
        result = replay(file, scripts=swaps, until=until)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(result.to_json() if fmt == "json" else result.describe())
    ctx.exit(0 if result.identical else 1)
