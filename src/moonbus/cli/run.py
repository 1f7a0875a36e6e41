"""``moonbus run``: scripts against a game: the demo world or ``--app MODULE:ATTR`` (SPEC §8).

Order of work, so that bad input never half-starts a run:

1. parse ``--option``s, read every script, name them (``mining#2``), check
   options against manifest defaults; compile every file of every script;
   check that the output files can be written. Any problem: one line (or
   ``file:line: message`` per syntax error) and exit 2, nothing started.
2. build the session (runtime, the app's world, event store), start every script.
3. tick: virtual time (``--tick-ms 0``, deterministic, as fast as possible;
   600 ms of virtual time per tick, which is what ``poll`` delays and
   ``sleep`` count) or real time (a game-loop thread, ``--tick-ms`` apart),
   until ``--ticks``, Ctrl-C, or no script left running.
4. stop the scripts (``on_stop`` runs), write ``--summary``, print the
   final table, exit 1 if a script failed, else 0.

Output: a live panel when stdout is a terminal; otherwise script log lines
go to stderr as they happen. ``--quiet`` shows neither, nor the final table.

Threads: the command runs on the main thread; see ``session`` for the rest.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote

import click
from rich.console import Console
from rich.live import Live

from moonbus.cli.app_option import app_option, resolve_app
from moonbus.cli.interrupt import stop_on_interrupt
from moonbus.cli.panel import final_table, render_panel, view_of
from moonbus.cli.replay_cmd import note_app, record_option
from moonbus.cli.script_check import compile_problems
from moonbus.cli.summary import build_summary, check_writable, dumps, write_atomic
from moonbus.cli.watch import ScriptWatcher
from moonbus.errors import ConfigError, SharedBackendError, StoreError
from moonbus.host.deferred import EVENT_DELIVERY_MODES
from moonbus.runtime import LogLine
from moonbus.session.plan import plan_scripts
from moonbus.session.session import Session, script_logs_only_in_sinks

__all__ = ["run_command"]

VIRTUAL_TICK_SECONDS = 0.6


class _JsonLogSink:
    """Writes one JSON object per script log line; called from any logging thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, line: LogLine) -> None:
        text = json.dumps(line.to_dict(), ensure_ascii=False)
        with self._lock:
            self._stream.write(text + "\n")


class _EchoSink:
    """Prints script log lines to stderr (when there is no live panel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, line: LogLine) -> None:
        tick = "-" if line.tick is None else str(line.tick)
        text = f"[{tick}] {line.script}/{line.engine} {line.level}: {line.msg}"
        with self._lock:
            click.echo(text, err=True)


def _usage(exc: Exception) -> click.UsageError:
    return click.UsageError(str(exc))


@click.command("run")
@click.argument("scripts", nargs=-1, required=True, metavar="SCRIPT...")
@click.option("--ticks", type=click.IntRange(min=0), default=None,
              help="Stop after N ticks (default: run until Ctrl-C).")
@click.option("--tick-ms", type=click.IntRange(min=0), default=600, show_default=True,
              help="Milliseconds per tick; 0 = virtual time, as fast as possible, deterministic.")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed.")
@click.option("--option", "option_texts", multiple=True, metavar="[SCRIPT:]KEY=VALUE",
              help="A script option (repeatable); SCRIPT: limits it to that script.")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a JSON summary here at the end.")
@click.option("--log-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every script log line here, one JSON object a line.")
@click.option("--events-db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Record every event in this SQLite file (journal mode: kept through "
              "kill -9, committed in batches; --events sqlite:///FILE?mode=durable for a "
              "commit per emit).")
@click.option("--events", "events_url", default=None, metavar="URL",
              help="Record every event in this store (sqlite:///FILE or redis://HOST:PORT/DB).")
@click.option("--shared", "shared_url", default="memory://", show_default=True, metavar="URL",
              help="Shared store: memory:// or redis://HOST:PORT/DB (several processes).")
@click.option("--event-delivery", type=click.Choice(EVENT_DELIVERY_MODES),
              default="immediate", show_default=True,
              help="immediate: handlers run inside emit; deferred: an event thread runs "
              "them in batches (higher throughput).")
@click.option("--quiet", "-q", is_flag=True, help="No panel, no log lines, no final table.")
@click.option("--watch", is_flag=True,
              help="Reload a script when its file changes (shared values survive; a "
              "syntax error is logged and the running version kept). Real time only.")
@record_option
@app_option
@click.pass_context
def run_command(
    ctx: click.Context,
    scripts: tuple[str, ...],
    ticks: int | None,
    tick_ms: int,
    seed: int,
    option_texts: tuple[str, ...],
    summary: Path | None,
    log_json: Path | None,
    events_db: Path | None,
    events_url: str | None,
    shared_url: str,
    event_delivery: str,
    quiet: bool,
    watch: bool,
    record: Path | None,
    app_spec: str | None,
) -> None:
    """Run SCRIPT... (.lua files or script folders) against the demo world or --app.

    \b
    Examples:
      moonbus run examples/mining.lua
      moonbus run examples/mining.lua --ticks 300 --tick-ms 0 --summary out.json
      moonbus run examples/chat_monitor.lua examples/mining.lua --option mining:ore=tin
      moonbus run --app examples.grid_game:app examples/grid/collector.lua --tick-ms 0
      moonbus run examples/mining.lua --ticks 300 --tick-ms 0 --record run.mbrec

    Scripts are named after their file (mining.lua -> mining; the same file
    again -> mining#2). --option KEY=VALUE goes to every script, NAME:KEY=VALUE
    only to that one; values are typed (true/false, numbers, else text) unless
    the script's manifest gives a default, whose type wins.

    With --tick-ms 0 each tick is 600 ms of virtual time: poll delays and
    sleep() count in it, and the same scripts, seed and ticks give the same
    summary. The run ends at --ticks, on Ctrl-C, or when no script is left
    running; the scripts are then stopped (on_stop runs). In the summary,
    "running" means the script was still running when the run ended.

    With --watch (real time only) a script is reloaded when its file (or any
    .lua file of its folder) changes: the new version is compiled first, a
    syntax error is logged as file:line and the running version kept; shared
    values survive the reload; a script that had failed is started again.
    The run then ends only at --ticks or Ctrl-C.

    Exit codes: 0 ok, 1 a script failed, 2 bad usage or a script that does
    not compile (nothing is started).
    """
    app = resolve_app(app_spec)
    try:
        plans = plan_scripts(scripts, option_texts)
        for path, what in ((summary, "--summary"), (log_json, "--log-json"),
                           (events_db, "--events-db"), (record, "--record")):
            if path is not None:
                check_writable(path, what)
    except ConfigError as exc:
        raise _usage(exc) from exc
    problems = compile_problems(plans)
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        ctx.exit(2)

    virtual = tick_ms == 0
    if watch and virtual:
        raise click.UsageError("--watch needs real time: give --tick-ms N with N > 0 "
                               "(--tick-ms 0 runs as fast as possible, no time to edit)")
    if events_db is not None:
        if events_url is not None:
            raise click.UsageError("give --events-db FILE or --events URL, not both")
        events_url = f"sqlite:///{quote(str(events_db))}"
    try:
        session = Session(plans, seed=seed, app=app, virtual=virtual, events_url=events_url,
                          shared_url=shared_url, event_delivery=event_delivery,
                          tick_seconds=VIRTUAL_TICK_SECONDS if virtual else tick_ms / 1000.0,
                          record=record)
        note_app(session, app_spec)
    except (ConfigError, StoreError, SharedBackendError) as exc:
        raise _usage(exc) from exc
    log_stream: IO[str] | None = None
    try:
        if log_json is not None:
            # Line-buffered, so that `tail -f` follows a real-time run.
            log_stream = open(log_json, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
            session.add_log_sink(_JsonLogSink(log_stream))
        watcher = ScriptWatcher(session, plans) if watch else None
        code = _run(session, ticks=ticks, quiet=quiet, summary=summary, watcher=watcher)
    finally:
        session.close()
        if log_stream is not None:
            log_stream.close()
    ctx.exit(code)


def _run(session: Session, *, ticks: int | None, quiet: bool, summary: Path | None,
         watcher: ScriptWatcher | None = None) -> int:
    console = Console()
    use_panel = console.is_terminal and not quiet
    if not quiet and not use_panel:
        session.add_log_sink(_EchoSink())
    stop = threading.Event()
    with stop_on_interrupt(stop), script_logs_only_in_sinks():
        session.start()
        try:
            if use_panel:
                _run_with_panel(session, ticks, stop, console, watcher)
            else:
                _drive(session, ticks, stop, None, watcher)
        finally:
            session.stop_scripts()
    reports = session.report()
    events = session.counter.snapshot()
    if summary is not None:
        document = build_summary(ticks=session.tick, seed=session.seed, reports=reports,
                                 events=events, world=session.world.summary())
        write_atomic(summary, dumps(document))
    if not quiet:
        console.print(final_table(reports, ticks=session.tick, events=sum(events.values())))
        if stop.is_set():
            click.echo(f"interrupted at tick {session.tick}", err=True)
    return 1 if any(r.status == "failed" for r in reports) else 0


def _drive(session: Session, ticks: int | None, stop: threading.Event,
           progress: Callable[[], None] | None, watcher: ScriptWatcher | None) -> None:
    if session.virtual:
        session.run_virtual(ticks, stop, progress)
        return
    if watcher is None:
        session.run_realtime(ticks, stop, progress)
        return

    def look() -> None:  # the control thread, between waits of the loop
        watcher.check()
        if progress is not None:
            progress()

    # Watching: a failed script waits for its fix, so only --ticks or Ctrl-C end the run.
    session.run_realtime(ticks, stop, look, keep_alive=True)


def _run_with_panel(
    session: Session, ticks: int | None, stop: threading.Event, console: Console,
    watcher: ScriptWatcher | None,
) -> None:
    with Live(render_panel(view_of(session)), console=console, auto_refresh=False,
              transient=True, redirect_stderr=False) as live:

        def refresh() -> None:
            live.update(render_panel(view_of(session)), refresh=True)

        _drive(session, ticks, stop, refresh, watcher)
        refresh()
