"""``replay(FILE)``: run a recording's scripts again in virtual time and compare.

The run is a ``moonbus.session.session.Session`` in virtual time (the recorded
``tick_seconds`` per tick, the recorded seed, settings and event delivery)
whose app is the recording itself (``moonbus.replay.world``): the game's
code is not needed. What is compared:

* every event a script emitted, per script, in order: type and payload
  (as recorded JSON). Per script, not by global seq, so that a real-time
  recording (whose threads interleaved as they happened to) replays in
  virtual time; in a real-time recording, per script and event type (its
  poll and its handlers ran on two threads); the report gives both seqs;
* every host API call (object, method, arguments) against the recording;
* at the end, each script's status, shared values and stats
  (not ``--until``); polls and timings are not compared.

The first divergence stops the replay at the end of that tick. With
``until`` the recording is replayed to the tick of event ``until`` and only
events up to it are compared.

Threads: everything on the calling thread (the event thread too in deferred
delivery; the check locks).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moonbus.bus import Event
from moonbus.errors import ConfigError
from moonbus.host.context import HostSettings
from moonbus.host.source import ScriptSource, load_source
from moonbus.record.codec import decode, dumps, encode, same
from moonbus.record.recording import Recording, ScriptRow
from moonbus.replay.divergence import Divergence, ReplayResult, short
from moonbus.replay.world import ReplayApp, ReplayBook, ref
from moonbus.session.session import ScriptPlan, Session, script_logs_only_in_sinks

if TYPE_CHECKING:
    from moonbus.host.script import ScriptHost
    from moonbus.runtime import LogLine, Runtime

__all__ = ["replay"]


class _Check:
    """The replay's observer (``Runtime(record=...)``): compares as the run goes."""

    def __init__(self, book: ReplayBook, final: Mapping[str, Mapping[str, Any]],
                 until: int | None) -> None:
        self._book = book
        self._app: ReplayApp | None = None
        self._final = final
        self._until = until
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.divergence: Divergence | None = None
        self.events = 0
        self.script_events = 0

    def set_app(self, app: ReplayApp) -> None:
        self._app = app

    def diverged(self, found: Divergence) -> None:
        with self._lock:
            if self.divergence is None:
                self.divergence = found
                self.stop.set()

    # ------------------------------------------------------------- observer
    def attach(self, runtime: Runtime) -> None:
        runtime.bus.on("*", self._on_event, owner="moonbus-replay")

    def wrap_api(self, name: str, api: Any) -> Any:
        return api

    def api_view(self, script: str, apis: Mapping[str, Any]) -> Mapping[str, Any]:
        world = self._app.world if self._app is not None else None
        return world.api_view(script, apis) if world is not None else apis

    def script_loaded(self, name: str, source: ScriptSource, options: Mapping[str, Any]) -> None:
        return None

    def finish(self, hosts: Sequence[ScriptHost]) -> None:
        if self._until is not None or self.divergence is not None:
            return
        for host in hosts:
            want = self._final.get(host.name)
            if want is None:
                continue
            got = {"status": host.status, "shared": encode(host.shared.dump(), ref),
                   "stats": encode(host.stats, ref)}
            for key in ("status", "shared", "stats"):
                if not same(want[key], json.loads(dumps(got[key]))):
                    self.diverged(Divergence(
                        "final value", self._book.last_seq, None, host.name,
                        f"{key} {short(want[key])}", f"{key} {short(got[key])}"))
                    return

    # ---------------------------------------------------------------- events
    def _on_event(self, event: Event) -> None:
        with self._lock:
            self.events += 1
        if not event.source.startswith("script:"):
            return
        script = event.source[len("script:"):]
        data = encode(event.data, ref)
        with self._lock:
            self.script_events += 1
            queue = self._book.expected.get(self._book.stream_key(event.source, event.type))
            expected = queue.popleft() if queue else None
        actual = f"{event.type} {short(data)}"
        if expected is None:
            if self._until is None:
                self.diverged(Divergence("extra event", None, None, script,
                                         "no further event from this script", actual,
                                         event.seq, event.tick))
            return
        if expected.type != event.type or not same(expected.data, data):
            self.diverged(Divergence("event", expected.seq, expected.tick, script,
                                     f"{expected.type} {short(expected.data)}", actual,
                                     event.seq, event.tick))

    def log_line(self, line: LogLine) -> None:
        """A script that got a ``ReplayDivergenceError`` logs it: that names the script."""
        if "replay divergence" in line.msg:
            with self._lock:
                if self.divergence is not None and self.divergence.script is None:
                    self.divergence.script = line.script

    def leftovers(self) -> None:
        """After the run: recorded events or calls the replay did not make."""
        if self._until is not None or self.divergence is not None:
            return
        missing = [q[0] for q in self._book.expected.values() if q]
        if missing:
            first = min(missing, key=lambda row: row.seq)
            self.diverged(Divergence("missing event", first.seq, first.tick,
                                     first.source[len("script:"):],
                                     f"{first.type} {short(first.data)}",
                                     "the replay ended without it"))
            return
        calls = self._book.calls_left()
        if calls:
            call = calls[0]
            self.diverged(Divergence("api call", call.seq, call.tick, None,
                                     f"a call of {call.method} with {short(call.args)}",
                                     "the replay ended without it"))


def _settings(values: Mapping[str, Any] | None) -> HostSettings:
    if not values:
        return HostSettings()
    known = {f.name for f in fields(HostSettings)}
    return HostSettings(**{k: v for k, v in values.items() if k in known})


def _plans(rows: Sequence[ScriptRow], folder: Path, swaps: Mapping[str, str | Path],
           book: ReplayBook) -> list[ScriptPlan]:
    unknown = sorted(set(swaps) - {row.name for row in rows})
    if unknown:
        raise ConfigError(f"--script {unknown[0]}=...: the recording has no script "
                          f"{unknown[0]!r} (it has {', '.join(r.name for r in rows)})")
    plans = []
    for pos, row in enumerate(rows):
        base = folder / str(pos)
        for rel, text in row.files.items():
            target = base / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
        swap = swaps.get(row.name)
        source = load_source(swap if swap is not None else base / row.entry)
        plans.append(ScriptPlan(row.name, row.name, source, decode(row.options, book.obj)))
    return plans


def _drive(session: Session, ticks: int | None, stop: threading.Event) -> None:
    session.start()
    try:
        session.run_virtual(ticks, stop)
    finally:
        session.stop_scripts()


def replay(path: str | Path, *, scripts: Mapping[str, str | Path] | None = None,
           until: int | None = None) -> ReplayResult:
    """Replay the recording at ``path`` (see the module docstring).

    ``scripts``: ``{name: path}`` of scripts to run instead of the recorded
    ones. ``until``: stop at the tick of event ``until`` and compare only up
    to it. ``ConfigError`` for a file that is not a recording or an unknown
    script name.
    """
    started = time.perf_counter()  # the replay's time includes reading the file
    with Recording(path) as recording:
        book = ReplayBook(recording, until)
        rows = recording.scripts()
        final = recording.final()
    meta = book.meta
    check = _Check(book, final, until)
    app = ReplayApp(book, check.diverged)
    check.set_app(app)
    ticks = book.until_tick if until is not None else int(meta.get("ticks") or 0)
    with tempfile.TemporaryDirectory(prefix="moonbus-replay-") as folder:
        plans = _plans(rows, Path(folder), scripts or {}, book)
        session = Session(plans, seed=int(meta.get("seed") or 0), app=app, virtual=True,
                          tick_seconds=float(meta.get("tick_seconds") or 0.6),
                          event_delivery=str(meta.get("event_delivery") or "immediate"),
                          settings=_settings(meta.get("settings")), record=check)
        try:
            session.add_log_sink(check.log_line)
            with script_logs_only_in_sinks():
                _drive(session, ticks, check.stop)
        finally:
            session.close()
    check.leftovers()
    world = app.world
    counts = {
        "events": check.events,
        "script_events": check.script_events,
        "host_events": world.host_events if world is not None else 0,
        "calls": world.calls_answered if world is not None else 0,
        "scripts": len(rows),
        "ticks": session.tick,
    }
    return ReplayResult(check.divergence, counts, time.perf_counter() - started)
