"""What a script host needs from the runtime, passed in explicitly.

``ScriptContext`` is built once by the ``Runtime`` and shared by its script
hosts; nothing in it is global. ``HostSettings`` are the tunables a host
reads (time limits, poll delay, failure threshold); the runtime may change
them live through the admin ``settings.set`` command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from moonbus.bus import Bus
from moonbus.bus.cascade import DEFAULT_MAX_CASCADE_DEPTH, DEFAULT_MAX_CASCADE_EVENTS
from moonbus.host.deferred import DeferredDelivery
from moonbus.host.limits import LifecycleCounters, check_setting
from moonbus.host.scheduler import ScriptScheduler
from moonbus.host.script_events import ScriptEventHub
from moonbus.lua.sandbox import DEFAULT_ARENA_BYTES, DEFAULT_MAX_SOURCE_BYTES, SandboxFactory

if TYPE_CHECKING:
    from moonbus.host.event_names import EventNameChecker

__all__ = ["BUILTIN_EVENT_TYPES", "PACING_MAX_LAG", "HostSettings", "LogSink",
           "ScriptContext", "script_seed"]

# Deferred delivery's pacing (moonbus.host.deferred): the default lag. An emit
# waits only while deliveries are cheap (each at most a quarter of the lag in
# event-thread CPU time), so slow handlers never hold the host to their rate.
PACING_MAX_LAG = 0.0005

BUILTIN_EVENT_TYPES: Mapping[str, str] = {
    "TICK": "tick",
    "GAME_ACTION": "game_action",
    "MESSAGE_RECEIVED": "message_received",
    "INVENTORY_CHANGED": "inventory_changed",
    "LEVEL_UP": "level_up",
    "XP_GAINED": "xp_gained",
    "COMBAT_STARTED": "combat_started",
    "COMBAT_ENDED": "combat_ended",
    "BANK_OPENED": "bank_opened",
    "BANK_CLOSED": "bank_closed",
}


def script_seed(run_seed: int, script: str, engine: str) -> int:
    """The ``math.random`` seed of one engine of one script in a run seeded ``run_seed``.

    Derived with a stable hash (not Python's salted ``hash``), so a replay in
    another process draws the same numbers; different per script and engine,
    so two scripts do not draw in lockstep. Fits a Lua integer.
    """
    digest = hashlib.blake2b(f"{run_seed}\0{script}\0{engine}".encode(), digest_size=7)
    return int.from_bytes(digest.digest(), "big")


class LogSink(Protocol):
    """Receives every script log line (the runtime fans it out)."""

    def __call__(
        self, script: str, engine: str, level: str, message: str, tick: int | None
    ) -> None: ...


@dataclass
class HostSettings:
    """Tunables read by script hosts at each call (so changes apply at once).

    Times are seconds. ``poll_delay`` is used when ``poll`` returns no number;
    ``max_poll_delay`` bounds the delay ``poll`` may return and ``sleep`` may
    ask for (larger ones, infinity included, are clamped to it).
    ``lifecycle_timeout`` is also the stop budget: once a script is being
    stopped, all of its code (the unwinding task, deferred events queued
    before the stop, ``on_stop``) gets that much more time, then it is ended.

    Every field is checked when set (``moonbus.host.limits.check_setting``):
    NaN, infinity, zero, negative or absurd values raise ``ConfigError``
    naming the field and the value, so no bad number reaches a timer.

    Host-side memory caps per script (SPEC §4b; ``moonbus.host.memory_caps``):
    ``max_log_line`` and ``max_error_length`` are UTF-8 bytes kept of one log
    line or recorded error text (the rest is cut, with a marker);
    ``max_stats_keys``, ``max_stats_key`` and ``max_stats_value`` bound the
    ``stats`` panel (keys, key bytes, string value bytes: past them ``set``
    is an error and nothing is stored); ``max_deferred_events`` is how many
    events may wait for the main engine's deferred handlers (reaching it
    stops the script as ``failed``); ``max_emit_size`` is the estimated host
    memory in bytes of one event a script emits (``LuaConverter.to_py``:
    the bus log keeps up to ``log_size`` events, so it bounds their total);
    ``max_host_value`` is the estimated size of any other value a script
    passes to the host in one call (a shared table, a game API argument),
    read when the script starts.

    ``max_source_bytes`` caps the size of every source a script compiles: its
    files (read by ``Runtime.load``, ``require``) and ``load`` inside it; it
    applies to scripts started after a change. Compiling runs under the
    time limit of the call it is part of (``lifecycle_timeout`` for the
    script's files, the handler's limit for a ``load`` in a handler).

    Cascades and handler time (SPEC §4b), with defaults a real game does not
    reach:

    * ``max_cascade_depth`` / ``max_cascade_events``: the events handlers may
      cause per top-level emit (``moonbus.bus.cascade``; the bus reads them
      here, live);
    * ``handler_timeout`` is one budget per script per event: all of a
      script's event-engine handlers for one event share it;
    * ``max_handler_timeouts`` exhaustions of that budget (or of a deferred
      handler's) within ``handler_timeout_window`` seconds stop the script as
      ``failed``: 5 within 60 s is ~0.5 s of stolen handler time a minute,
      never reached by a script that only sometimes runs long;
    * ``max_handlers_per_script``: ``events:on``/``once`` per engine; 1,000 is
      ~10x what the largest demo or example script registers, and bounds
      what every event costs (each handler is one Lua call).
    """

    handler_timeout: float | None = 0.1  # None: no limit (Python embedders only)
    lifecycle_timeout: float = 5.0
    poll_delay: float = 0.1
    max_poll_failures: int = 5
    memory_limit: int = 64 * 1024 * 1024
    max_errors_kept: int = 20
    max_log_line: int = 8 * 1024
    max_error_length: int = 4 * 1024
    max_stats_keys: int = 256
    max_stats_key: int = 256
    max_stats_value: int = 4 * 1024
    max_deferred_events: int = 10_000
    max_emit_size: int = 32 * 1024
    max_host_value: int = 8 * 1024 * 1024
    max_poll_delay: float = 24 * 3600.0
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES
    # Arena chunks one script engine may hold for its small Lua objects
    # (moonbus.lua.arena): read when the runtime is made, not by settings.set;
    # None: lupa's allocator only (docs/limits.md). On by default: at
    # thousands of scripts a tick misses the cache and the TLB less (issue 16).
    lua_arena_bytes: int | None = DEFAULT_ARENA_BYTES
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH
    max_cascade_events: int = DEFAULT_MAX_CASCADE_EVENTS
    max_handler_timeouts: int = 5
    handler_timeout_window: float = 60.0
    max_handlers_per_script: int = 1_000
    # Deferred delivery (moonbus.host.deferred): an emit waits, GIL released,
    # once the oldest undelivered event was queued this long ago and the
    # deliveries are cheap (seconds; default PACING_MAX_LAG, 0.5 ms; None:
    # never). Read at each drain.
    deferred_max_lag: float | None = PACING_MAX_LAG
    # Deferred delivery's queue (moonbus.host.deferred): deliveries queued at
    # most; past it an event is not queued for the event thread's handlers
    # (dropped, logged, counted in deferred_statistics().dropped). Pacing does
    # not wait for slow handlers, so without a bound their backlog would grow
    # with every emit. Read at each drain.
    max_queued_deliveries: int = 250_000
    # The admin command script.eval (moonbus.admin.eval_cmd): runs Lua an
    # admin types inside a running script. Off unless the operator turns it
    # on when building the runtime (moonbus serve --admin-eval); settings.set
    # cannot change it.
    admin_eval: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, check_setting(name, value))
    # Handler errors (moonbus.host.error_log): repeats of one error are
    # summarised once a window; at most this many distinct errors tracked per script.
    error_log_window: float = 1.0
    max_distinct_errors: int = 64
    # ScriptEvent records waiting for the notifier (moonbus.host.script_events).
    max_script_event_backlog: int = 10_000
    # Event names learned from scripts' emits (moonbus.host.event_names).
    max_event_names: int = 10_000


@dataclass
class ScriptContext:
    """The collaborators every script host gets from its runtime."""

    bus: Bus
    factory: SandboxFactory
    scheduler: ScriptScheduler
    settings: HostSettings
    log: LogSink
    tick: Callable[[], int | None]
    apis: dict[str, Any] = field(default_factory=dict)
    event_types: Mapping[str, str] = field(default_factory=lambda: dict(BUILTIN_EVENT_TYPES))
    native: bool = True  # False: event delivery stays on the Python path (moonbus.native)
    # What the C deliveries of the runtime's engines took and handed back
    # (moonbus.lua.fastcall.make_delivery_counts; None: no C delivery).
    delivery_counts: Any = None
    # Set when the runtime defers event-engine delivery (moonbus.host.deferred).
    deferred: DeferredDelivery | None = None
    # What the lifecycle limits did (stop aborts, clamped numbers...), shared
    # by the runtime's hosts; read through Runtime.lifecycle_statistics().
    counters: LifecycleCounters = field(default_factory=LifecycleCounters)
    # Reproducible runs (docs/replay.md): the run's seed, from which each
    # engine's math.random is seeded (None: Lua's own random seed), and the
    # virtual clock that os.time/os.clock/os.date read in virtual time (None:
    # the wall clock).
    random_seed: int | None = None
    virtual_clock: Callable[[], float] | None = None
    # Set by a recorder or a replay (Runtime(record=...)): the API objects one
    # script gets, so that each script's calls are recorded and answered as
    # its own (moonbus.record.observer).
    api_view: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None

    def apis_for(self, script: str) -> dict[str, Any]:
        """The Lua globals registered by the host, as script ``script`` gets them."""
        if self.api_view is None:
            return dict(self.apis)
        return dict(self.api_view(script, self.apis))
    # Where scripts' ScriptEvent records go (moonbus.host.script_events).
    script_events: ScriptEventHub | None = None
    # Set when the host declared its event types (moonbus.host.event_names).
    event_names: EventNameChecker | None = None
