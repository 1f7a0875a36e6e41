"""Numbers that scripts and operators hand to the host, checked before any timer sees them.

Why: a delay reaches ``threading.Condition.wait`` (and the scheduler's heap)
in the end. NaN breaks the heap's order, infinity or 1e13 ms overflow the
wait (``OverflowError``) and, before these checks, killed the scheduler
worker that read it. So every number is checked where it enters (SPEC §4b
"Numbers from scripts are checked"):

* a delay from a script (``poll``'s return value, ``sleep``): NaN is an error
  in the script that names the value (``sleep`` raises it in Lua; a ``poll``
  that returns NaN counts as a failed poll); a negative delay means "at once"
  (0); a delay over ``HostSettings.max_poll_delay`` (default 24 h; infinity
  included) is clamped to it. Clamps are counted and logged once per script
  and kind;
* a setting (``HostSettings`` fields, ``settings.set``): refused with a
  ``ConfigError`` naming the key and the value unless finite, positive and
  within its bound (``check_setting``).

``LifecycleCounters`` is shared by the hosts of one runtime (any thread may
count; one lock guards the counts).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moonbus.errors import ConfigError, ScriptError

if TYPE_CHECKING:
    from moonbus.host.scheduler import SchedulerStatistics

__all__ = [
    "MAX_SECONDS",
    "LifecycleCounters",
    "LifecycleStatistics",
    "check_setting",
    "script_delay",
    "setting_bounds",
]

# The largest time any setting may hold (a week): far beyond a real game's
# need, far below what a timer wait can take (threading.TIMEOUT_MAX).
MAX_SECONDS = 7 * 24 * 3600.0
# (kind, lower bound exclusive, upper bound inclusive) of each HostSettings field.
_SETTING_BOUNDS: dict[str, tuple[type, float, float]] = {
    "handler_timeout": (float, 0.0, MAX_SECONDS),
    "lifecycle_timeout": (float, 0.0, MAX_SECONDS),
    "poll_delay": (float, 0.0, MAX_SECONDS),
    "max_poll_delay": (float, 0.0, MAX_SECONDS),
    "max_poll_failures": (int, 0, 1_000_000),
    "memory_limit": (int, 0, 1 << 40),
    "max_errors_kept": (int, 0, 10_000),
    # Host-side memory caps per script (moonbus.host.memory_caps), in bytes or counts.
    "max_log_line": (int, 0, 1 << 30),
    "max_error_length": (int, 0, 1 << 30),
    "max_stats_keys": (int, 0, 10_000_000),
    "max_stats_key": (int, 0, 1 << 30),
    "max_stats_value": (int, 0, 1 << 30),
    "max_deferred_events": (int, 0, 100_000_000),
    "max_emit_size": (int, 0, 1 << 40),
    "max_host_value": (int, 0, 1 << 40),
    "max_source_bytes": (int, 0, 1 << 30),
    "lua_arena_bytes": (int, 4095, 1 << 30),
    "max_cascade_depth": (int, 0, 1_000_000),
    "max_cascade_events": (int, 0, 100_000_000),
    "max_handler_timeouts": (int, 0, 1_000_000),
    "handler_timeout_window": (float, 0.0, MAX_SECONDS),
    "max_handlers_per_script": (int, 0, 10_000_000),
    "deferred_max_lag": (float, 0.0, 3600.0),
    "max_queued_deliveries": (int, 0, 1 << 40),
    # Script notifications and the handler-error log (moonbus.host.script_events,
    # moonbus.host.error_log) and learned event names (moonbus.host.event_names).
    "error_log_window": (float, 0.0, MAX_SECONDS),
    "max_distinct_errors": (int, 0, 1_000_000),
    "max_script_event_backlog": (int, 0, 100_000_000),
    "max_event_names": (int, 0, 100_000_000),
}
# None turns the limit off (embedders measuring their handlers); never from
# settings.set. lifecycle_timeout is the stop budget and cannot be off.
_MAY_BE_NONE = frozenset({"handler_timeout", "deferred_max_lag", "lua_arena_bytes"})
# On/off switches, not numbers: given as bool, at construction only (never
# through settings.set, which does not list them).
_FLAGS = frozenset({"admin_eval"})


def check_setting(name: str, value: Any, *, shown: str | None = None) -> Any:
    """``value`` if it is a valid value for the ``HostSettings`` field ``name``.

    Raises ``ConfigError`` naming the setting (``shown``: the name the user
    typed, e.g. ``poll_delay_ms``) and the value when it is not a finite
    number above the field's floor and within its bound.
    """
    label = shown or name
    if value is None and name in _MAY_BE_NONE:
        return value
    if name in _FLAGS:
        if not isinstance(value, bool):
            raise ConfigError(f"setting {label} must be true or false, got {value!r}")
        return value
    kind, low, high = _SETTING_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"setting {label} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"setting {label} must be a whole number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"setting {label} must be a finite number, got {value!r}")
    if not low < value <= high:
        raise ConfigError(f"setting {label} must be above {low:g} and at most {high:g}, "
                          f"got {value!r}")
    return value


def setting_bounds(name: str) -> tuple[float, float]:
    """(exclusive floor, inclusive ceiling) of the ``HostSettings`` field ``name``."""
    _, low, high = _SETTING_BOUNDS[name]
    return low, high


def script_delay(ms: Any, *, what: str, maximum: float) -> tuple[float, str | None]:
    """(seconds, clamp note or None) for a delay of ``ms`` milliseconds from a script.

    Raises ``ScriptError`` naming the value for NaN or a non-number; clamps a
    negative delay to 0 and one above ``maximum`` seconds (infinity
    included) to ``maximum``, saying so in the note.
    """
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        raise ScriptError(f"{what}: the delay must be a number of milliseconds, got {ms!r}")
    if math.isnan(ms):
        raise ScriptError(f"{what}: the delay is nan, not a number of milliseconds")
    if ms < 0:
        return 0.0, f"{what}: a delay of {ms!r} ms is negative: using 0"
    seconds = float(ms) / 1000.0
    if seconds > maximum:
        return maximum, (f"{what}: a delay of {ms!r} ms is over max_poll_delay "
                         f"({maximum * 1000:.0f} ms): clamped to it")
    return seconds, None


@dataclass(frozen=True)
class LifecycleStatistics:
    """Counts of what the lifecycle limits did (``Runtime.lifecycle_statistics``)."""

    stop_aborts: int  # stops that had to end script code still running after the stop
    clamped_numbers: int  # delays from scripts clamped (negative, over max_poll_delay)
    refused_numbers: int  # delays and settings refused (NaN, inf, out of bounds)
    scheduler_job_exceptions: int  # host bugs caught around one script's slice
    scheduler_worker_errors: int  # errors caught in a worker's own loop (it kept running)
    threads_not_ended: int  # threads still alive after their timed join at close

    @classmethod
    def of(cls, counters: LifecycleCounters, sched: SchedulerStatistics) -> LifecycleStatistics:
        """The statistics from a runtime's counters and its scheduler's."""
        return cls(stop_aborts=counters.stop_aborts, clamped_numbers=counters.clamped_numbers,
                   refused_numbers=counters.refused_numbers,
                   scheduler_job_exceptions=sched.job_exceptions,
                   scheduler_worker_errors=sched.worker_errors,
                   threads_not_ended=counters.threads_not_ended)


class LifecycleCounters:
    """Thread-safe counters for the lifecycle limits of one runtime's hosts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stop_aborts = 0
        self.clamped_numbers = 0
        self.refused_numbers = 0
        self.threads_not_ended = 0

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (any thread)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)
