"""What a script host needs from the runtime, passed in explicitly.

``ScriptContext`` is built once by the ``Runtime`` and shared by its script
hosts; nothing in it is global. ``HostSettings`` are the tunables a host
reads (time limits, poll delay, failure threshold); the runtime may change
them live through the admin ``settings.set`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from moonbus.bus import Bus
from moonbus.host.deferred import DeferredDelivery
from moonbus.host.scheduler import ScriptScheduler
from moonbus.lua.sandbox import SandboxFactory

__all__ = ["BUILTIN_EVENT_TYPES", "HostSettings", "LogSink", "ScriptContext"]

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


class LogSink(Protocol):
    """Receives every script log line (the runtime fans it out)."""

    def __call__(
        self, script: str, engine: str, level: str, message: str, tick: int | None
    ) -> None: ...


@dataclass
class HostSettings:
    """Tunables read by script hosts at each call (so changes apply at once).

    Times are seconds. ``poll_delay`` is used when ``poll`` returns no number.
    """

    handler_timeout: float = 0.1
    lifecycle_timeout: float = 5.0
    poll_delay: float = 0.1
    max_poll_failures: int = 5
    memory_limit: int = 64 * 1024 * 1024
    max_errors_kept: int = 20


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
    # Set when the runtime defers event-engine delivery (moonbus.host.deferred).
    deferred: DeferredDelivery | None = None
