"""The composition root: one ``Runtime`` owns a bus, stores, hosts and engines.

Nothing in moonbus is global. ``Runtime`` builds every collaborator from URLs
and options and passes each its dependencies; tests build fresh runtimes.

Two ways to drive scripts:

* ``threaded=True`` (default): scheduler worker threads run the scripts'
  main engines in real time; the host just emits events.
* ``threaded=False`` with an injected ``clock``: the host calls
  ``run_due()`` after each game tick; everything runs on the host's thread,
  in a deterministic order (this is how ``moonbus run --tick-ms 0`` works).

Event-engine handlers run inside ``emit`` by default (``event_delivery=
"immediate"``); ``event_delivery="deferred"`` queues them for an event thread
that runs them in batches soon after (``moonbus.host.deferred``);
``flush_events`` waits for that queue.

Several processes: with an event store shared by several processes
(``events="redis://..."``) the runtime follows it (``remote_events=True``):
events the other processes emit from then on reach this runtime's Python
subscribers and scripts too, in the one global order, on the store feed's
delivery thread. Their data arrives as JSON (value objects become tables).

Threads: ``load``, ``register_api`` and ``close`` are meant for the host's
control thread; ``bus.emit`` may be called from any thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moonbus.api_check import check_api, check_event_types
from moonbus.bus import Bus, Event
from moonbus.bus.event import FROZEN_MAPPING_TYPES
from moonbus.errors import ConfigError
from moonbus.host.context import HostSettings, ScriptContext
from moonbus.host.deferred import EVENT_DELIVERY_MODES, DeferredDelivery, DeferredStatistics
from moonbus.host.event_names import EventNameChecker
from moonbus.host.gate import DeliveryGate
from moonbus.host.limits import LifecycleCounters, LifecycleStatistics
from moonbus.host.log_line import LogLine
from moonbus.host.scheduler import ScriptScheduler
from moonbus.host.script import ScriptHost
from moonbus.host.script_events import (
    SCRIPT_EVENT_TYPES,
    ScriptEventHub,
    ScriptEventStatistics,
    ScriptListener,
)
from moonbus.host.source import load_source, merge_options
from moonbus.lua.fastcall import make_delivery_counts
from moonbus.lua.sandbox import SandboxFactory
from moonbus.lua.value_path import is_event_data_value
from moonbus.native import FastPathStatistics
from moonbus.record.observer import RunObserver
from moonbus.shared import SharedStore
from moonbus.store.base import EventStore, StoreSettings

if TYPE_CHECKING:
    from moonbus.http.server import HttpServer

__all__ = ["LogLine", "Runtime"]

_script_log = logging.getLogger("moonbus.script")
_runtime_log = logging.getLogger("moonbus.runtime")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


class Runtime:
    """Owns one bus, one shared store, an optional event store, and script hosts."""

    def __init__(
        self,
        *,
        shared: str | SharedStore = "memory://",
        events: str | EventStore | None = None,
        settings: HostSettings | None = None,
        store_settings: StoreSettings | None = None,
        log_size: int = 10_000,
        lua: str = "lua54",
        threaded: bool = True,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
        recent_log_size: int = 200,
        remote_events: bool = True,
        native: bool = True,
        event_delivery: str = "immediate",
        event_types: Mapping[str, str] | None = None,
        seed: int | None = None,
        record: str | Path | RunObserver | None = None,
        on_script_event: ScriptListener | None = None,
    ) -> None:
        if event_delivery not in EVENT_DELIVERY_MODES:
            raise ConfigError(
                f"event_delivery must be one of {', '.join(EVENT_DELIVERY_MODES)}, "
                f"got {event_delivery!r}"
            )
        self.settings = settings or HostSettings()
        self.store_settings = store_settings or StoreSettings()
        self._owned: list[Any] = []
        self.shared = self._open_shared(shared, native)
        self.event_store = self._open_events(events)
        # Handlers before polls: scheduler workers hold off new slices while
        # the bus delivers (see moonbus.host.gate).
        self.gate = DeliveryGate()
        # native=False keeps the C fast paths (moonbus.native) off for this
        # runtime: the pure-Python reference paths, for comparison and debugging.
        self.native = native
        self.bus = Bus(log_size=log_size, store=self.event_store, gate=self.gate, native=native,
                       cascade_limits=self.settings, value_objects=is_event_data_value)
        self.factory = SandboxFactory(
            lua=lua,
            memory_limit=self.settings.memory_limit,
            frozen_mappings=FROZEN_MAPPING_TYPES,  # event data: copied as dicts into Lua
            max_source_bytes=self.settings.max_source_bytes,
            native=native, arena_bytes=self.settings.lua_arena_bytes,
        )
        self.scheduler = ScriptScheduler(clock=clock, gate=self.gate)
        # "deferred": event-engine handlers run on an event thread, in batches,
        # soon after emit returns (see moonbus.host.deferred).
        self.event_delivery = event_delivery
        self._deferred = None
        if event_delivery == "deferred":  # wired to the bus: DeferredDelivery.attach
            self._deferred = DeferredDelivery.attach(self.bus, threaded=threaded, native=native,
                                                     settings=lambda: self.settings)
        self._tick: int | None = None
        self._tick_sub = self.bus.on("tick", self._on_tick, owner="runtime")
        self._sinks: list[Callable[[LogLine], None]] = []
        self.recent_logs: deque[LogLine] = deque(maxlen=recent_log_size)
        self._lock = threading.Lock()
        self._scripts: dict[str, ScriptHost] = {}
        self._apis: dict[str, Any] = {}
        self._env_source = resources.files("moonbus.host").joinpath("script_env.lua").read_text(
            "utf-8"
        )
        # Scripts started, stopped, failed, handler errors: to listeners and
        # the bus, from a notifier outside every script lock (host/script_events.py).
        self._script_events = ScriptEventHub(
            bus=self.bus, threaded=threaded, clock=clock,
            window=lambda: self.settings.error_log_window,
            max_backlog=lambda: self.settings.max_script_event_backlog,
        )
        if on_script_event is not None:
            self._script_events.add_listener(on_script_event)
        self._ctx = ScriptContext(
            bus=self.bus,
            factory=self.factory,
            scheduler=self.scheduler,
            settings=self.settings,
            log=self._log,
            tick=lambda: self._tick,
            apis=self._apis,
            native=native, delivery_counts=make_delivery_counts(native),  # C delivery's counters
            deferred=self._deferred,
            # Reproducible runs (docs/replay.md): seeded math.random; in
            # stepped mode with an injected clock, os.time/os.clock read it.
            random_seed=seed,
            virtual_clock=None if threaded or clock is time.monotonic else clock,
            script_events=self._script_events,
        )
        self.seed = seed
        if event_types is not None:
            # The host's declared event types: scripts' events.EventType table.
            self._ctx.event_types = check_event_types(event_types)
            # ...and names no one declared are warned about (host/event_names.py).
            self._ctx.event_names = EventNameChecker(
                [*self._ctx.event_types.values(), *SCRIPT_EVENT_TYPES.values()],
                max_names=lambda: self.settings.max_event_names,
                warn=lambda script, level, msg: self._log(script, "host", level, msg,
                                                          self._tick),
            )
        from moonbus.admin.commands import build_registry

        self.admin = build_registry(self)
        self._http: list[HttpServer] = []  # serve_http's servers; they stop first in close()
        self._closed = False
        # A store shared by several processes (Redis) also brings their events
        # to this bus, from now on, in the global order (see Bus.deliver_remote).
        self._follower = (
            self.event_store.follow(self.bus)
            if self.event_store is not None and remote_events
            else None
        )
        # record=FILE (or an observer such as the replayer's checker): every
        # host event, API call and script of this run (moonbus.replay).
        self.recorder: RunObserver | None = None
        if record is not None:
            if isinstance(record, (str, Path)):
                from moonbus.record.recorder import Recorder

                record = Recorder(record)
            self.recorder = record
            self._ctx.api_view = record.api_view
            record.attach(self)
        self._threaded = threaded
        if threaded:
            self.scheduler.start(workers)

    # ----------------------------------------------------------- construction
    def _open_shared(self, shared: str | SharedStore, native: bool) -> SharedStore:
        if isinstance(shared, SharedStore):
            return shared
        store = SharedStore.from_url(shared, native=native)
        self._owned.append(store)
        return store

    def _open_events(self, events: str | EventStore | None) -> EventStore | None:
        if events is None or isinstance(events, EventStore):
            return events
        from moonbus.store.factory import open_event_store

        store = open_event_store(events, self.store_settings)
        self._owned.append(store)
        return store

    # ------------------------------------------------------------------ ticks
    def _on_tick(self, event: Event) -> None:
        if event.tick is not None:
            self._tick = event.tick

    @property
    def tick(self) -> int | None:
        """The current game tick (from the latest ``tick`` event or ``set_tick``)."""
        return self._tick

    @property
    def event_types(self) -> dict[str, str]:
        """Scripts' ``events.EventType`` table (key -> event name), a copy."""
        return dict(self._ctx.event_types)

    def set_tick(self, tick: int) -> None:
        """Tell scripts' ``time()`` the current tick without emitting an event."""
        self._tick = tick

    # -------------------------------------------------------------------- logs
    def _log(self, script: str, engine: str, level: str, message: str, tick: int | None) -> None:
        line = LogLine(tick=tick, script=script, engine=engine, level=level, msg=message)
        self.recent_logs.append(line)
        _script_log.log(_LEVELS.get(level, logging.INFO), "[%s/%s t=%s] %s",
                        script, engine, tick, message)
        for sink in list(self._sinks):
            sink(line)

    def host_log(self, script: str, level: str, message: str) -> None:
        """Write a line from the host into ``script``'s log (engine ``host``): what a
        tool did to the script (a watch reload, an admin evaluation), beside its
        own lines, in every sink. Any thread."""
        self._log(script, "host", level, message, self._tick)

    def add_log_sink(self, sink: Callable[[LogLine], None]) -> Callable[[], None]:
        """Also send every log line to ``sink`` (logging thread); returns its remover."""
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink) if sink in self._sinks else None

    # ----------------------------------------------------------- script events
    def add_script_listener(self, listener: ScriptListener) -> Callable[[], None]:
        """Call ``listener(ScriptEvent)`` when a script starts, stops, fails or a
        handler of it errs; returns a function that removes the listener.

        Called on the ``moonbus-script-events`` thread (threaded runtime) or
        inside ``run_due()`` (stepped), never under a script's lock: it may
        stop or reload scripts. The same records reach the bus as
        ``script:started``/``stopped``/``failed``/``handler_error`` events
        with ``source="moonbus"`` (``moonbus.host.script_events``).
        """
        return self._script_events.add_listener(listener)

    def script_event_statistics(self) -> ScriptEventStatistics:
        """Counters of script notifications and undeclared event names."""
        return self._script_events.statistics(self._ctx.event_names)

    # -------------------------------------------------------------------- apis
    def register_api(self, name: str, api: Any) -> None:
        """Expose ``api`` (a ``@lua_api`` object or plain data) as a Lua global to
        scripts loaded from now on.

        Checked here, once (``moonbus.api_check``): a name that is not a Lua
        name or would shadow a standard library or moonbus global, and a value
        Lua cannot use (a plain function, an undecorated object...), raise
        ``ConfigError`` naming the global and what to do instead.
        """
        checked = check_api(name, api)
        self._apis[checked] = api if self.recorder is None else self.recorder.wrap_api(checked, api)

    # ----------------------------------------------------------------- scripts
    def load(
        self,
        path: str | Path,
        options: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        namespace: str | None = None,
        text: str | None = None,
    ) -> ScriptHost:
        """Load a script (file or folder) without starting it.

        ``name`` defaults to the file's stem, made unique with ``#2``, ``#3``.
        ``namespace`` (default: the script's name) selects its shared values;
        give several scripts the same namespace to share them.
        """
        self._check_open()
        source = load_source(path, text=text, max_bytes=self.settings.max_source_bytes)
        if self._ctx.event_names is not None:
            self._ctx.event_names.learn_source(source.text)  # its literal emits
        merged = merge_options(source.defaults, options)
        with self._lock:
            base = name or source.name
            unique = base
            n = 1
            while unique in self._scripts:
                n += 1
                unique = f"{base}#{n}"
            shared = self.shared.namespace(namespace or unique)
            host = ScriptHost(
                name=unique,
                source=source,
                options=merged,
                shared=shared,
                ctx=self._ctx,
                env_source=self._env_source,
            )
            self._scripts[unique] = host
        if self.recorder is not None:
            self.recorder.script_loaded(unique, source, dict(options or {}))
        return host

    @property
    def scripts(self) -> dict[str, ScriptHost]:
        """Loaded scripts by name, in load order (a copy)."""
        with self._lock:
            return dict(self._scripts)

    def script(self, name: str) -> ScriptHost:
        """The script called ``name``; ``KeyError`` naming it when unknown."""
        with self._lock:
            try:
                return self._scripts[name]
            except KeyError:
                raise KeyError(f"no script named {name!r}") from None

    def unload(self, name: str) -> None:
        """Stop and forget a script."""
        host = self.script(name)
        host.close()
        with self._lock:
            self._scripts.pop(name, None)

    def frame(self, tick: int, data: Mapping[str, Any] | None = None) -> int:
        """Stepped mode, one call per game frame (SPEC §10): set the tick
        (scripts' ``time()``), emit ``tick`` with ``data`` (plus ``tick``) at
        that tick, then run everything due at the runtime's clock: event
        handlers have run, deferred events are delivered, due polls have run.
        Returns the number of script slices run.

        The clock is the one the runtime was built with (``Runtime(threaded=
        False, clock=game_clock)``): advance it before calling, and poll
        deadlines keep a fixed schedule on it (``return 100`` under a 60 fps
        clock runs every 6th frame). Call it from the thread that drives the
        game loop; a threaded runtime runs its scripts on its own workers, so
        there ``frame`` is refused (emit ``tick`` yourself)."""
        if self._threaded:
            raise ConfigError("frame() drives a stepped runtime: build it with threaded=False")
        self.set_tick(tick)
        payload = {"tick": tick} if data is None else {**data, "tick": tick}
        self.bus.emit("tick", payload, tick=tick)
        return self.run_due()

    def run_due(self, now: float | None = None) -> int:
        """Stepped mode: deliver queued events (deferred delivery), then run every
        script slice due now, on this thread."""
        if self._deferred is not None:
            self._deferred.run_pending()
        ran = self.scheduler.run_due(now)
        self._script_events.dispatch()  # what happened to scripts, on this thread
        return ran

    def flush_events(self, timeout: float | None = None) -> bool:
        """Deferred delivery: wait until every event emitted so far has reached
        the event-engine handlers (False if ``timeout`` seconds passed first).
        With immediate delivery there is never anything to wait for."""
        return True if self._deferred is None else self._deferred.flush(timeout)

    def deferred_statistics(self) -> DeferredStatistics | None:
        """Deferred delivery's counters, pacing included (None: immediate delivery)."""
        return None if self._deferred is None else self._deferred.statistics()

    def serve_http(self, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
                   **limits: Any) -> HttpServer:
        """The HTTP API and console (docs/http.md; extra ``moonbus[http]``) on a thread
        until ``close()``; port 0 picks one, ``token=None`` makes one; ``limits``: HttpSettings
        fields, or ``runner=``/``rcon=`` (a job pool, an RCON server) for ``/metrics``."""
        self._check_open()
        from moonbus.http.server import serve

        self._http.append(serve(self, host=host, port=port, token=token, **limits))
        return self._http[-1]

    # ------------------------------------------------------------------- close
    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the runtime is closed")

    def close(self, timeout: float = 30.0) -> None:
        """Stop every script (running ``on_stop``), flush stores, release everything.

        Always returns, within about ``timeout`` seconds plus the stores' own
        flushing: scripts are asked to stop all at once and each gets what is
        left of one deadline (a script's code runs at most its lifecycle
        limit after its stop; see ``ScriptHost``). Every step runs even when
        an earlier one fails (the event store is flushed and closed whatever
        a script or thread did); errors are logged, and the first is raised
        at the end with the others as notes. A thread still alive after its
        timed join is logged and counted (``threads_not_ended``).
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        errors: list[BaseException] = []

        def step(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:
                _runtime_log.exception("close: %s failed", what)
                exc.add_note(f"while closing the runtime: {what}")
                errors.append(exc)

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        for server in self._http:  # no request reaches a runtime that is closing
            step(f"stopping the HTTP server on {server.url}", server.stop)
        deferred = self._deferred
        if deferred is not None:  # what was emitted reaches the handlers first
            step("delivering deferred events", lambda: deferred.flush(min(5.0, left())))
        hosts = list(self.scripts.values())
        for host in hosts:
            step(f"stopping script {host.name}", functools.partial(host.stop, wait=False))
        for host in hosts:
            step(f"closing script {host.name}",
                 lambda host=host: host.close(timeout=left()))  # type: ignore[misc]
        step("stopping the scheduler",
             lambda: self._not_ended(self.scheduler.close(timeout=min(10.0, left()))))
        # The scripts' last notifications, before the bus closes.
        step("delivering script notifications",
             lambda: self._script_events.close(min(5.0, left())))
        recorder = self.recorder
        if recorder is not None:  # every script has ended: its final values are known
            step("finishing the recording", lambda: recorder.finish(hosts))
        if deferred is not None:
            step("stopping the event thread",
                 lambda: self._not_ended(0 if deferred.close(min(5.0, left())) else 1))
        if self._follower is not None:
            step("stopping the event store feed", self._follower.close)
        step("closing the bus", self.bus.close)
        for owned in reversed(self._owned):
            step(f"closing {owned!r}", owned.close)
        step("closing the Lua factory", self.factory.close)
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"also: {other!r}")
            raise first

    def _not_ended(self, count: int) -> None:
        if count:
            self._ctx.counters.add("threads_not_ended", count)

    @property
    def lifecycle_counters(self) -> LifecycleCounters:
        """The counters of the lifecycle limits (admin commands add to them too)."""
        return self._ctx.counters

    def lifecycle_statistics(self) -> LifecycleStatistics:
        """What the lifecycle limits did: stops that had to end running code,
        clamped and refused numbers, scheduler errors caught, threads that
        did not end in time (see ``moonbus.host.limits``)."""
        return LifecycleStatistics.of(self._ctx.counters, self.scheduler.statistics())

    def fast_path_statistics(self) -> FastPathStatistics:
        """What the C emit core and C event delivery took and handed back (``moonbus.native``)."""
        return FastPathStatistics.of(self.bus.statistics(), self._ctx.delivery_counts)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
