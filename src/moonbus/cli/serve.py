"""``moonbus serve``: a game (the demo world or ``--app``) in real time, scripts,
a durable store, RCON and/or the HTTP API.

The same session as ``moonbus run`` (world, runtime, scripts), kept running
until Ctrl-C or SIGTERM even when no script is left running (an operator can
start them again over RCON), with the admin RCON server answering from the
runtime's command registry. On stop: the RCON server closes, scripts stop
(``on_stop`` runs), the event store is flushed and closed, exit 0.

A store error (disk full, lock held, Redis away) never stops the server: the
tick whose events were refused is reported (``StoreErrorReport``) and the
game goes on; a script's failed ``events.emit`` raises in the script. If
closing the store fails at the end, that is printed and the exit code is 1.

The RCON password comes from ``--rcon-password`` or ``MOONBUS_RCON_PASSWORD``;
there is no default. RCON runs when a password is given; without one, serve
refuses to start unless ``--http HOST:PORT`` is given, and then serves over
HTTP only (an admin front end is always on, and never one without its
secret). The HTTP API (``moonbus.cli.http_option``, docs/http.md) stops
first at the end, like RCON, so no request reaches scripts that are stopping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import click

from moonbus.admin.rcon_server import RconServer
from moonbus.cli.app_option import app_option, resolve_app
from moonbus.cli.http_option import http_options, parse_host_port, start_http
from moonbus.cli.interrupt import stop_on_interrupt
from moonbus.cli.replay_cmd import note_app, record_option
from moonbus.cli.script_check import compile_problems
from moonbus.errors import AdminError, ConfigError, SharedBackendError, StoreError
from moonbus.host.context import HostSettings
from moonbus.host.deferred import EVENT_DELIVERY_MODES
from moonbus.session.plan import plan_scripts
from moonbus.session.session import Session

__all__ = ["StoreErrorReport", "serve_command"]

DEFAULT_EVENTS_DB = "moonbus-events.db"
REPEAT_EVERY = 10.0  # seconds between reminders while the store keeps failing


class StoreErrorReport:
    """What ``serve`` does with a tick the event store refused (SPEC §6: logged
    and counted, the host keeps running): the first error of an outage is
    printed, then a reminder with the count at most every ``repeat_every``
    seconds, and the recovery with the outage's total. ``refused`` counts
    every refused tick of the run (printed at the end).

    Threads: called by the game-loop thread only; ``refused`` is read by the
    control thread after the loop ended.
    """

    def __init__(
        self, echo: Callable[[str], None], *, repeat_every: float = REPEAT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._echo = echo
        self._repeat_every = repeat_every
        self._clock = clock
        self.refused = 0
        self._streak = 0
        self._last_said = 0.0

    def __call__(self, error: StoreError | None) -> None:
        if error is None:
            self._echo(f"moonbus serve: event store recovered; {self._streak} tick(s) had "
                       "events it refused")
            self._streak = 0
            return
        self.refused += 1
        self._streak += 1
        now = self._clock()
        if self._streak == 1 or now - self._last_said >= self._repeat_every:
            self._last_said = now
            self._echo(f"moonbus serve: store error ({self._streak} tick(s) refused so far, "
                       f"the server keeps running): {error}")


@click.command("serve")
@click.argument("scripts", nargs=-1, required=True, metavar="SCRIPT...")
@click.option("--rcon-host", default="127.0.0.1", show_default=True)
@click.option("--rcon-port", type=click.IntRange(0, 65535), default=27015, show_default=True,
              help="0 picks a free port (printed at start).")
@click.option("--rcon-password", envvar="MOONBUS_RCON_PASSWORD", default=None,
              help="Required for RCON (or MOONBUS_RCON_PASSWORD); without it, only "
              "--http serves.")
@click.option("--events-db", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_EVENTS_DB, show_default=True,
              help="Durable SQLite event store, in journal mode (kept through kill -9, "
              "committed in batches; readers see an event within 50 ms). --events "
              "sqlite:///FILE?mode=durable commits each emit instead.")
@click.option("--events", "events_url", default=None, metavar="URL",
              help="Event store URL instead of --events-db (sqlite:///FILE, redis://...).")
@click.option("--shared", "shared_url", default="memory://", show_default=True, metavar="URL",
              help="Shared store: memory:// or redis://HOST:PORT/DB.")
@click.option("--tick-ms", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--ticks", type=click.IntRange(min=0), default=None,
              help="Stop after N ticks (default: until Ctrl-C or SIGTERM).")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed.")
@click.option("--option", "option_texts", multiple=True, metavar="[SCRIPT:]KEY=VALUE",
              help="A script option (repeatable).")
@click.option("--event-delivery", type=click.Choice(EVENT_DELIVERY_MODES),
              default="immediate", show_default=True,
              help="immediate: handlers run inside emit; deferred: an event thread runs "
              "them in batches (higher throughput).")
@click.option("--admin-eval", is_flag=True,
              help="Allow the admin command script.eval (Lua in a running script; "
              "audited in the log). Off by default.")
@http_options
@record_option
@app_option
@click.pass_context
def serve_command(
    ctx: click.Context,
    scripts: tuple[str, ...],
    rcon_host: str,
    rcon_port: int,
    rcon_password: str | None,
    events_db: Path,
    events_url: str | None,
    shared_url: str,
    tick_ms: int,
    ticks: int | None,
    seed: int,
    option_texts: tuple[str, ...],
    event_delivery: str,
    admin_eval: bool,
    record: Path | None,
    app_spec: str | None,
    http_address: str | None,
    http_token: str | None,
) -> None:
    """Run SCRIPT... in real time against the demo world or --app, with the admin RCON
    server and/or the HTTP API (--http), and a durable event store."""
    if not rcon_password and not http_address:
        raise click.UsageError(
            "an RCON password is required (--rcon-password or MOONBUS_RCON_PASSWORD), "
            "or serve over HTTP only with --http HOST:PORT"
        )
    if http_address:
        try:
            parse_host_port(http_address)  # a typo fails before anything starts
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    app = resolve_app(app_spec)
    try:
        plans = plan_scripts(scripts, option_texts)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    problems = compile_problems(plans)
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        ctx.exit(2)
    url = events_url or f"sqlite:///{quote(str(events_db))}"
    try:
        session = Session(plans, seed=seed, app=app, virtual=False, events_url=url,
                          shared_url=shared_url, tick_seconds=tick_ms / 1000.0,
                          event_delivery=event_delivery, record=record,
                          settings=HostSettings(admin_eval=admin_eval))
        note_app(session, app_spec)
    except (ConfigError, StoreError, SharedBackendError) as exc:
        raise click.UsageError(str(exc)) from exc
    stoppers: list[Callable[[], None]] = []  # the front ends, stopped first at the end

    def stop_fronts() -> None:
        while stoppers:
            stoppers.pop()()

    try:
        try:
            fronts = []
            rcon: RconServer | None = None
            if rcon_password:
                try:
                    rcon = RconServer(session.runtime.admin.answer, password=rcon_password,
                                      host=rcon_host, port=rcon_port)
                    rcon.start()
                except (ConfigError, AdminError) as exc:
                    raise click.UsageError(str(exc)) from exc
                stoppers.append(rcon.stop)
                fronts.append(f"RCON on {rcon.host}:{rcon.port}")
            else:
                fronts.append("RCON off (no password)")
            if http_address:
                http = start_http(session.runtime, http_address, http_token,
                                  lambda text: click.echo(text, err=True), rcon=rcon)
                stoppers.append(http.stop)
                fronts.append(f"HTTP on {http.url}")
            click.echo(
                f"moonbus serve: {app.name}, {len(plans)} script(s), {', '.join(fronts)}, "
                f"events in {events_url or events_db}; Ctrl-C or SIGTERM stops",
                err=True,
            )
            stop = threading.Event()
            store_errors = StoreErrorReport(lambda text: click.echo(text, err=True))
            with stop_on_interrupt(stop, sigterm=True):
                session.start()
                try:
                    session.run_realtime(ticks, stop, keep_alive=True,
                                         store_errors=store_errors)
                finally:
                    stop_fronts()  # no admin request reaches a script that is stopping
                    session.stop_scripts()
        finally:
            stop_fronts()
        failed = [r.name for r in session.report() if r.status == "failed"]
    finally:
        try:
            session.close()
        except StoreError as exc:  # e.g. the final flush on a full disk
            click.echo(f"moonbus serve: closing the event store failed: {exc}", err=True)
            ctx.exit(1)
    refused = f"; {store_errors.refused} tick(s) refused by the event store" if (
        store_errors.refused) else ""
    click.echo(f"moonbus serve: stopped; {len(failed)} failed script(s){refused}", err=True)
    ctx.exit(0)
