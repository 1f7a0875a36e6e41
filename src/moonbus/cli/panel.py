"""What ``moonbus run`` shows: the live panel and the final table.

``PanelView`` is a plain snapshot (read from a ``Session`` by ``view_of``);
``render_panel`` and ``final_table`` turn views into rich renderables and do
nothing else, so they are tested against a ``Console(file=StringIO())``.

The world line is the app's own (``AppWorld.status_line``, see
``moonbus.app``), so the panel works the same for the demo world and for a
game given with ``--app``.

Threads: ``view_of`` reads the session from the control thread (script stats,
shared values and the app's status line are read under their own locks, so it
is safe while scripts run); rendering touches nothing shared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moonbus.runtime import LogLine
from moonbus.session.session import ScriptReport, Session

__all__ = ["PanelView", "ScriptRow", "final_table", "render_panel", "view_of"]

_STATUS_STYLE = {"running": "green", "stopped": "cyan", "failed": "bold red",
                 "starting": "yellow", "stopping": "yellow", "loaded": "dim"}
_LEVEL_STYLE = {"debug": "dim", "info": "", "warn": "yellow", "error": "bold red"}
_VALUE_WIDTH = 60


@dataclass(frozen=True)
class ScriptRow:
    name: str
    status: str
    polls: int
    handler_errors: int
    errors: int
    stats: Mapping[str, Any]
    shared: Mapping[str, Any]


@dataclass(frozen=True)
class PanelView:
    """Everything the live panel shows, as plain data."""

    mode: str
    tick: int
    seed: int
    events: int
    scripts: Sequence[ScriptRow]
    world: str
    logs: Sequence[LogLine]
    app: str = "demo world"


def view_of(session: Session, *, log_lines: int = 10) -> PanelView:
    """A snapshot of ``session`` for the panel."""
    rows = [
        ScriptRow(
            name=h.name,
            status=h.status,
            polls=h.polls,
            handler_errors=h.handler_errors,
            errors=len(h.errors),
            stats=h.stats,
            shared=h.shared.dump(),
        )
        for h in session.hosts
    ]
    mode = "virtual time" if session.virtual else f"real time, {session.tick_seconds * 1000:g} ms"
    return PanelView(
        mode=mode,
        tick=session.tick,
        seed=session.seed,
        events=sum(session.counter.snapshot().values()),
        scripts=rows,
        world=session.world.status_line(),
        logs=session.recent_logs(log_lines),
        app=session.app.name,
    )


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def _pairs(values: Mapping[str, Any]) -> str:
    return "\n".join(f"{k} = {_short(v)}" for k, v in values.items()) or "-"


def _log_text(line: LogLine) -> Text:
    text = Text()
    text.append(f"[{line.tick if line.tick is not None else '-':>5}] ", style="dim")
    text.append(f"{line.script}/{line.engine} ", style="cyan")
    text.append(f"{line.level}: {line.msg.splitlines()[0] if line.msg else ''}",
                style=_LEVEL_STYLE.get(line.level, ""))
    return text


def render_panel(view: PanelView) -> RenderableType:
    """The live panel: header, one row per script, the world line, recent log lines."""
    scripts = Table(expand=True, show_edge=False, pad_edge=False)
    scripts.add_column("script", no_wrap=True)
    scripts.add_column("status", no_wrap=True)
    scripts.add_column("polls", justify="right")
    scripts.add_column("handler err", justify="right")
    scripts.add_column("errors", justify="right")
    scripts.add_column("stats")
    scripts.add_column("shared")
    for row in view.scripts:
        scripts.add_row(
            row.name,
            Text(row.status, style=_STATUS_STYLE.get(row.status, "")),
            str(row.polls),
            str(row.handler_errors),
            str(row.errors),
            _pairs(row.stats),
            _pairs(row.shared),
        )
    logs = Group(*(_log_text(line) for line in view.logs)) if view.logs else Text("-", "dim")
    header = Text(
        f"{view.app} · tick {view.tick} · {view.mode} · seed {view.seed} · "
        f"{view.events} events",
        style="bold",
    )
    return Panel(
        Group(header, scripts, Text(view.world),
              Panel(logs, title="recent log", title_align="left", border_style="dim")),
        title="moonbus run",
        title_align="left",
        subtitle="Ctrl-C stops the scripts",
        subtitle_align="right",
    )


def final_table(reports: Sequence[ScriptReport], *, ticks: int, events: int) -> Table:
    """The short table printed when a run ends."""
    table = Table(title=f"moonbus run: {ticks} ticks, {events} events", title_justify="left")
    table.add_column("script", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("polls", justify="right")
    table.add_column("handler err", justify="right")
    table.add_column("shared")
    table.add_column("last error")
    for r in reports:
        table.add_row(
            r.name,
            Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
            str(r.polls),
            str(r.handler_errors),
            _pairs(r.shared),
            (r.errors[-1].splitlines()[0] if r.errors else "-"),
        )
    return table
