"""One app's world, one runtime and the scripts a ``moonbus run`` drives.

``Session`` is the host side of a run (the command line's ``run``, ``serve``
and ``watch``, the replayer, the replay bench, the test kit): it builds the ``Runtime``
(threaded for real time, stepped with a virtual clock for ``--tick-ms 0``)
with the app's declared event types, the app's world (``App.create``, the
demo world by default; see ``moonbus.app``) wired to the runtime's bus,
registers the world's Lua APIs, loads the planned scripts under their unique
names, counts every committed event by type, and stops everything in order
at the end. ``moonbus serve`` builds on it the same way.

Two ways to drive it:

* virtual time (``run_virtual``): on the calling thread, tick after tick, as
  fast as possible. The virtual clock advances 600 ms of virtual time per
  tick (``tick_seconds``), so a ``poll`` that returns 600 runs once per tick
  and ``sleep(1200)`` lasts two ticks, whatever the machine's speed. Same
  scripts, seed and ticks → the same run, event for event.
* real time (``run_realtime``): a game-loop thread steps the world every
  ``tick_seconds`` of wall time; the runtime's scheduler threads run the
  scripts' main engines; the calling thread only waits (and may refresh a
  panel through ``progress``).

Threads: construct, ``start``, the ``run_*`` methods, ``stop_scripts``,
``report`` and ``close`` belong to one control thread. The event counter is
called by whichever thread emits (the game loop, script threads) and locks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moonbus.app import App, AppWorld, event_type_table, load_app
from moonbus.bus import Event
from moonbus.errors import ScriptError, StoreError
from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.host.source import ScriptSource
from moonbus.record.observer import RunObserver
from moonbus.record.recorder import Recorder
from moonbus.runtime import LogLine, Runtime

__all__ = ["EventCounter", "ScriptPlan", "ScriptReport", "Session", "VirtualClock"]

ProgressFn = Callable[[], None]
#: Told of each refused tick (the error) and of recovery (None); game-loop thread.
StoreErrorFn = Callable[[StoreError | None], None]


@dataclass(frozen=True)
class ScriptPlan:
    """A script to load: its unique name, where it came from, its user options."""

    name: str
    display: str
    source: ScriptSource
    options: Mapping[str, Any]


@dataclass(frozen=True)
class ScriptReport:
    """What the summary and the final table say about one script."""

    name: str
    status: str
    shared: Mapping[str, Any]
    stats: Mapping[str, Any]
    polls: int
    handler_errors: int
    errors: tuple[str, ...]


class VirtualClock:
    """The time scripts see in virtual mode: set by the session, read by the scheduler.

    Tick ``k`` reads ``k * tick_seconds``. That product and a script's
    deadlines (sums of delays) are inexact in binary; the scheduler counts a
    task due within its ``due_tolerance`` (1 µs) and keeps polls on a fixed
    schedule, so a delay of exactly N ticks is due at tick N, every time, and
    a delay even 1 ms longer is not.
    """

    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self.now = 0.0

    def set_tick(self, tick: int) -> None:
        self.now = tick * self.tick_seconds

    def __call__(self) -> float:
        return self.now


class EventCounter:
    """Counts every committed event by type (a bus subscriber for ``*``). Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._counts[event.type] += 1

    def snapshot(self) -> dict[str, int]:
        """Counts by type, sorted by type name."""
        with self._lock:
            return dict(sorted(self._counts.items()))


def _summary_status(status: str) -> str:
    if status in ("stopped", "failed"):
        return status
    return "running"


class Session:
    """An app's world plus a runtime plus scripts, for one command-line run."""

    def __init__(
        self,
        plans: Sequence[ScriptPlan],
        *,
        seed: int,
        app: App | None = None,
        virtual: bool,
        tick_seconds: float = 0.6,
        events_url: str | None = None,
        shared_url: str = "memory://",
        workers: int = 4,
        event_delivery: str = "immediate",
        settings: HostSettings | None = None,
        record: str | Path | RunObserver | None = None,
    ) -> None:
        self.seed = seed
        self.app = app if app is not None else load_app(None)
        self.virtual = virtual
        self.tick_seconds = tick_seconds
        self._clock = VirtualClock(tick_seconds)
        clock: Callable[[], float] = self._clock if virtual else time.monotonic
        # --record FILE: a Recorder that also knows the app and the tick length.
        self.recorder: Recorder | None = None
        if isinstance(record, (str, Path)):
            self.recorder = record = Recorder(record)
            record.note(app={"name": self.app.name}, tick_seconds=tick_seconds,
                        virtual=virtual)
        try:
            self.runtime = Runtime(events=events_url, shared=shared_url, threaded=not virtual,
                                   clock=clock, workers=workers, event_delivery=event_delivery,
                                   event_types=event_type_table(self.app), seed=seed,
                                   settings=settings, record=record)
        except BaseException:
            if self.recorder is not None:
                self.recorder.abandon()  # no half-written file left behind
            raise
        try:
            self.counter = EventCounter()
            self.runtime.bus.on("*", self.counter, owner="moonbus-cli")
            self.world: AppWorld = self.app.create(seed=seed, bus=self.runtime.bus)
            self.runtime.set_tick(self.world.tick)  # time() reads 0 before the first tick
            for name, api in self.world.apis().items():
                self.runtime.register_api(name, api)
            self.hosts: list[ScriptHost] = [
                self.runtime.load(p.source.path, p.options, name=p.name, text=p.source.text)
                for p in plans
            ]
        except BaseException:
            self.runtime.close()
            raise
        self._end_status: dict[str, str] = {}
        self.loop_error: BaseException | None = None

    # ------------------------------------------------------------- lifecycle
    def add_log_sink(self, sink: Callable[[LogLine], None]) -> None:
        self.runtime.add_log_sink(sink)

    def start(self) -> None:
        """Start every script in order. A script whose top-level code fails is
        marked failed (its error logged) and the others still start."""
        for host in self.hosts:
            # A ScriptError is recorded by the host: status failed, error logged and kept.
            with contextlib.suppress(ScriptError):
                host.start()
        if self.virtual:
            self.runtime.run_due(self._clock.now)

    @property
    def tick(self) -> int:
        return self.world.tick

    def any_running(self) -> bool:
        """True while at least one script has not ended (stopped or failed)."""
        return any(h.status not in ("stopped", "failed") for h in self.hosts)

    def advance_virtual(self) -> int:
        """Virtual mode: one tick of the world, then every script slice due by then."""
        self._clock.set_tick(self.world.tick + 1)
        tick = self.world.step()
        self.runtime.run_due(self._clock.now)
        return tick

    def run_virtual(
        self,
        ticks: int | None,
        stop: threading.Event,
        progress: ProgressFn | None = None,
        progress_every: float = 0.25,
    ) -> None:
        """Step until ``ticks`` ticks have run, ``stop`` is set or no script is left running.

        ``progress`` is called about every ``progress_every`` seconds of wall time
        (it must only read: the run stays deterministic).
        """
        last = time.monotonic()
        while not stop.is_set() and (ticks is None or self.world.tick < ticks):
            if not self.any_running():
                break
            self.advance_virtual()
            if progress is not None and time.monotonic() - last >= progress_every:
                progress()
                last = time.monotonic()

    def run_realtime(
        self,
        ticks: int | None,
        stop: threading.Event,
        progress: ProgressFn | None = None,
        progress_every: float = 0.25,
        keep_alive: bool = False,
        store_errors: StoreErrorFn | None = None,
    ) -> None:
        """Run the game loop thread until ``ticks``, ``stop`` or no script left running
        (with ``keep_alive``, only ``ticks`` or ``stop`` end it: ``moonbus serve``).

        The calling thread wakes every ``progress_every`` seconds to call
        ``progress`` and look at ``stop``. Returns once the loop thread has
        ended; if the world raised, that error is re-raised here. With
        ``store_errors``, a tick whose events the event store refused
        (``StoreError``: disk full, lock held, server away) is handed to it
        (``store_errors(error)``, then ``store_errors(None)`` after the next
        tick that went through) and the loop goes on: ``moonbus serve`` keeps
        running while the store is down.
        """
        halt = threading.Event()
        done = threading.Event()
        thread = threading.Thread(
            target=self._game_loop, args=(ticks, halt, done, store_errors),
            name="moonbus-game-loop", daemon=True,
        )
        thread.start()
        try:
            while not done.wait(progress_every):
                if progress is not None:
                    progress()
                if stop.is_set() or (not keep_alive and not self.any_running()):
                    break
        finally:
            halt.set()
            thread.join()
        if self.loop_error is not None:
            raise self.loop_error

    def _game_loop(
        self,
        ticks: int | None,
        halt: threading.Event,
        done: threading.Event,
        store_errors: StoreErrorFn | None,
    ) -> None:
        failing = False
        try:
            next_at = time.monotonic()
            while ticks is None or self.world.tick < ticks:
                next_at += self.tick_seconds
                delay = next_at - time.monotonic()
                if delay > 0:
                    if halt.wait(delay):
                        return
                else:
                    next_at = time.monotonic()  # behind: carry on, do not burst to catch up
                    if halt.is_set():
                        return
                if store_errors is None:
                    self.world.step()
                    continue
                try:
                    self.world.step()
                except StoreError as exc:  # the event was not committed; the tick goes on
                    failing = True
                    store_errors(exc)
                    continue
                if failing:
                    failing = False
                    store_errors(None)
        except BaseException as exc:  # kept for the control thread, which re-raises it
            self.loop_error = exc
        finally:
            done.set()

    def stop_scripts(self) -> None:
        """Remember each script's status at the end of the run, then stop them all
        (``on_stop`` runs, deferred events already queued are delivered first)."""
        for host in self.hosts:
            self._end_status.setdefault(host.name, host.status)
        for host in self.hosts:
            host.stop(wait=True)

    # ---------------------------------------------------------------- reports
    def report(self) -> list[ScriptReport]:
        """One report per script, in load order.

        ``status`` is where the script stood when the run ended (``running``
        when it was still running and was then stopped by moonbus), or
        ``failed`` when stopping it failed; the other fields are read after
        ``on_stop`` ran.
        """
        reports: list[ScriptReport] = []
        for host in self.hosts:
            final = host.status
            at_end = self._end_status.get(host.name, final)
            status = "failed" if final == "failed" else _summary_status(at_end)
            reports.append(
                ScriptReport(
                    name=host.name,
                    status=status,
                    shared=host.shared.dump(),
                    stats=host.stats,
                    polls=host.polls,
                    handler_errors=host.handler_errors,
                    errors=tuple(host.errors),
                )
            )
        return reports

    def recent_logs(self, limit: int) -> list[LogLine]:
        logs = list(self.runtime.recent_logs)
        return logs[-limit:] if limit > 0 else []

    def close(self) -> None:
        """Stop anything still running and release the runtime (idempotent)."""
        self.runtime.close()


@contextlib.contextmanager
def script_logs_only_in_sinks() -> Iterator[None]:
    """While a session runs, script log lines reach the user only through the
    runtime's sinks (the panel, the echo sink, ``--log-json``, a replay's
    report), not a second time through Python's last-resort logging handler
    (which prints warnings to stderr). Used by ``moonbus run`` and replay."""
    log = logging.getLogger("moonbus.script")
    handler = logging.NullHandler()
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
