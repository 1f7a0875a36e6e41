"""moonbus: an embeddable, event-driven Lua scripting runtime for Python games.

The public names live here; everything else is importable from its module but
may change between releases.
"""

from moonbus.bus import Bus, BusStatistics, Event, Subscription
from moonbus.errors import (
    AdminAuthError,
    AdminError,
    ClosedError,
    ConfigError,
    GameApiError,
    JobDataError,
    MoonbusError,
    RconProtocolError,
    RunnerBusyError,
    RunnerClosedError,
    ScriptCancelled,
    ScriptError,
    ScriptLimitError,
    ScriptMemoryError,
    ScriptSourceTooLarge,
    ScriptSyntaxError,
    ScriptTimeout,
    SharedBackendError,
    SharedTypeError,
    SharedValueError,
    StoreError,
)
from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.lua.exposure import lua_api, lua_multi
from moonbus.runner import CompiledJob, JobFuture, Runner, RunnerStatistics
from moonbus.runtime import Runtime
from moonbus.shared import SharedStore
from moonbus.store.base import EventStore, StoreSettings

__version__ = "0.1.0"

__all__ = [
    "AdminAuthError",
    "AdminError",
    "Bus",
    "BusStatistics",
    "ClosedError",
    "CompiledJob",
    "ConfigError",
    "Event",
    "EventStore",
    "GameApiError",
    "HostSettings",
    "JobDataError",
    "JobFuture",
    "MoonbusError",
    "RconProtocolError",
    "Runner",
    "RunnerBusyError",
    "RunnerClosedError",
    "RunnerStatistics",
    "Runtime",
    "ScriptCancelled",
    "ScriptError",
    "ScriptHost",
    "ScriptLimitError",
    "ScriptMemoryError",
    "ScriptSourceTooLarge",
    "ScriptSyntaxError",
    "ScriptTimeout",
    "SharedBackendError",
    "SharedStore",
    "SharedTypeError",
    "SharedValueError",
    "StoreError",
    "StoreSettings",
    "Subscription",
    "lua_api",
    "lua_multi",
]
