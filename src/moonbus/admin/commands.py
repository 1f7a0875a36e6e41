"""The standard admin commands of SPEC §7, bound to one ``Runtime``.

Events come from the durable event store when one is attached; otherwise
from the bus's bounded in-memory log (``events.clear`` then needs a store).
Settings are the host's (time limits, poll delay, failure threshold) and the
store's (retention, logging); ``settings.set`` changes them live.

The commands the HTTP API serves answer an ``Answer`` (``moonbus.admin.registry``):
the text RCON and the CLI print, and the same result as JSON-able ``data``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from moonbus.admin.eval_cmd import register_eval
from moonbus.admin.event_query import EVENTS_GET_USAGE, query_events
from moonbus.admin.registry import Answer, CommandRegistry, parse_int
from moonbus.bus import Event
from moonbus.errors import (
    AdminError,
    AdminNotFoundError,
    AdminStateError,
    AdminUnavailableError,
    ConfigError,
)
from moonbus.host.limits import setting_bounds
from moonbus.host.script import ScriptInfo
from moonbus.store.render import snapshot_json, summary_lines

if TYPE_CHECKING:
    from moonbus.runtime import Runtime

__all__ = ["build_registry"]

# setting name -> (object attribute, scale from the admin unit to the stored unit, kind)
_HOST_SETTINGS: dict[str, tuple[str, float, type]] = {
    "handler_timeout_ms": ("handler_timeout", 0.001, float),
    "lifecycle_timeout_ms": ("lifecycle_timeout", 0.001, float),
    "poll_delay_ms": ("poll_delay", 0.001, float),
    "max_poll_failures": ("max_poll_failures", 1, int),
    "max_poll_delay_ms": ("max_poll_delay", 0.001, float),
    # Host-side memory caps per script (SPEC §4b, moonbus.host.memory_caps).
    "max_log_line": ("max_log_line", 1, int),
    "max_error_length": ("max_error_length", 1, int),
    "max_stats_keys": ("max_stats_keys", 1, int),
    "max_stats_key": ("max_stats_key", 1, int),
    "max_stats_value": ("max_stats_value", 1, int),
    "max_deferred_events": ("max_deferred_events", 1, int),
    "max_emit_size": ("max_emit_size", 1, int),
    "max_host_value": ("max_host_value", 1, int),
    "max_source_bytes": ("max_source_bytes", 1, int),  # scripts started from now on
    "max_cascade_depth": ("max_cascade_depth", 1, int),
    "max_cascade_events": ("max_cascade_events", 1, int),
    "max_handler_timeouts": ("max_handler_timeouts", 1, int),
    "handler_timeout_window_ms": ("handler_timeout_window", 0.001, float),
    "max_handlers_per_script": ("max_handlers_per_script", 1, int),
    "deferred_max_lag_ms": ("deferred_max_lag", 0.001, float),
    "max_queued_deliveries": ("max_queued_deliveries", 1, int),
}
_STORE_SETTINGS = ("retention_ticks", "retention_count", "log_appends")
_IDLE = ("loaded", "stopped", "failed")  # statuses with nothing to stop


def _script_row(info: ScriptInfo) -> dict[str, Any]:
    """One script of the ``scripts`` answer as JSON-able data (HTTP ``/api/scripts``)."""
    return {
        "name": info.name, "status": info.status, "uptime": round(info.uptime, 3),
        "polls": info.polls, "handler_errors": info.handler_errors,
        "poll_errors": info.poll_errors, "stats": dict(info.stats), "errors": list(info.errors),
        "handler_timeouts": info.handler_timeouts, "handlers_skipped": info.handlers_skipped,
        "handlers_refused": info.handlers_refused, "quarantined": info.quarantined,
        "handler_calls": info.handler_calls,
    }


class _Commands:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # ------------------------------------------------------------------ events
    def _events(self, after_tick: int | None, types: list[str] | None = None) -> list[Event]:
        store = self.rt.event_store
        if store is not None:
            store.flush()
            return store.query(after_tick=after_tick, types=types)
        events = self.rt.bus.log(types=types)
        if after_tick is not None:
            events = [e for e in events if e.tick is not None and e.tick > after_tick]
        return events

    @staticmethod
    def _after(args: Sequence[str], index: int) -> int | None:
        return parse_int(args[index], "after_tick") if len(args) > index else None

    def events(self, args: Sequence[str]) -> str:
        after = self._after(args, 0)
        store = self.rt.event_store
        if store is not None:
            store.flush()
            summary = store.summary(after)
        else:
            summary = {}
            for event in self._events(after):
                summary[event.type] = summary.get(event.type, 0) + 1
        return summary_lines(summary, after_tick=after)

    def events_get(self, args: Sequence[str]) -> Answer:
        return query_events(self.rt.event_store, self.rt.bus, args)

    def events_snapshot(self, args: Sequence[str]) -> str:
        grouped: dict[str, list[Event]] = {}
        for event in self._events(self._after(args, 0)):
            grouped.setdefault(event.type, []).append(event)
        return snapshot_json(dict(sorted(grouped.items())))

    def events_clear(self, args: Sequence[str]) -> Answer:
        store = self.rt.event_store
        if store is None:
            raise AdminUnavailableError(
                "no durable event store is attached (start with --events-db)"
            )
        event_type = args[0] if args else None
        removed = store.clear(event_type)
        what = f"events of type {event_type!r}" if event_type else "events"
        return Answer(f"cleared {removed} {what}",
                      data={"cleared": removed, "type": event_type})

    # ----------------------------------------------------------------- scripts
    def listeners(self, args: Sequence[str]) -> str:
        lines = [
            f"{name} {engine} {pattern} {sub_id}"
            for name, host in self.rt.scripts.items()
            for engine, sub_id, pattern in host.listeners()
        ]
        return "\n".join(lines) if lines else "no active listeners"

    def scripts(self, args: Sequence[str]) -> Answer:
        lines = []
        rows = []
        for info in (host.info() for host in self.rt.scripts.values()):
            lines.append(
                f"{info.name} {info.status} uptime={info.uptime:.1f}s polls={info.polls} "
                f"handler_errors={info.handler_errors}"
            )
            rows.append(_script_row(info))
        return Answer("\n".join(lines) if lines else "no scripts loaded",
                      data={"scripts": rows})

    def _host(self, name: str) -> Any:
        try:
            return self.rt.script(name)
        except KeyError:
            raise AdminNotFoundError(f"no script named {name!r}") from None

    @staticmethod
    def _control(host: Any, text: str, *, unchanged: bool = False) -> Answer:
        return Answer(text, data={"name": host.name, "status": host.status, "message": text},
                      unchanged=unchanged)

    def script_reload(self, args: Sequence[str]) -> Answer:
        host = self._host(args[0])
        host.reload()
        return self._control(host, f"reloaded {host.name} ({host.status})")

    def script_stop(self, args: Sequence[str]) -> Answer:
        host = self._host(args[0])
        # Nothing to stop: said by ``unchanged`` (HTTP 409); the text stays as it was.
        idle = host.status in _IDLE
        host.stop()
        return self._control(host, f"stopped {host.name} ({host.status})", unchanged=idle)

    def script_start(self, args: Sequence[str]) -> Answer:
        host = self._host(args[0])
        if host.status in ("starting", "running"):
            return self._control(host, f"{host.name} is already {host.status}", unchanged=True)
        if host.status == "stopping":
            raise AdminStateError(f"{host.name} is stopping; start it once it has stopped")
        host.start()
        return self._control(host, f"started {host.name}")

    def shared_dump(self, args: Sequence[str]) -> Answer:
        host = self._host(args[0])
        values = host.shared.dump()
        return Answer(json.dumps(values, sort_keys=True, ensure_ascii=False),
                      data={"name": host.name, "shared": values})

    # ---------------------------------------------------------------- settings
    def settings(self, args: Sequence[str]) -> Answer:
        values: dict[str, Any] = {}
        host = self.rt.settings
        for name, (attr, scale, kind) in _HOST_SETTINGS.items():
            raw = getattr(host, attr)
            if raw is None:  # a limit turned off from Python (HostSettings(...=None))
                values[name] = "off"
                continue
            value = raw / scale
            values[name] = kind(round(value, 3)) if kind is int else round(value, 3)
        store = self.rt.store_settings
        for name in _STORE_SETTINGS:
            values[name] = getattr(store, name)
        return Answer("\n".join(f"{name} = {value}" for name, value in values.items()),
                      data={"settings": values})

    def settings_set(self, args: Sequence[str]) -> Answer:
        key, raw = args
        if key in _HOST_SETTINGS:
            attr, scale, kind = _HOST_SETTINGS[key]
            try:
                number = kind(raw)
            except ValueError:
                self.rt.lifecycle_counters.add("refused_numbers")
                raise AdminError(f"{key} must be a {kind.__name__}, got {raw!r}") from None
            stored = number * scale if scale != 1 else number
            try:
                # HostSettings checks every value it is given (finite, above
                # zero, within its bound: moonbus.host.limits).
                setattr(self.rt.settings, attr, stored)
            except ConfigError:
                self.rt.lifecycle_counters.add("refused_numbers")
                low, high = setting_bounds(attr)
                raise AdminError(
                    f"{key} must be a finite number above {low / scale:g} and at most "
                    f"{high / scale:g}, got {raw!r} ({key} is unchanged)"
                ) from None
            return Answer(f"{key} = {number}", data={"key": key, "value": number})
        if key in _STORE_SETTINGS:
            value: Any
            if key == "log_appends":
                if raw.lower() not in ("true", "false", "on", "off", "1", "0"):
                    raise AdminError(f"{key} must be true or false, got {raw!r}")
                value = raw.lower() in ("true", "on", "1")
            elif raw.lower() in ("none", "off", "unlimited"):
                value = None
            else:
                value = parse_int(raw, key)
            try:
                self.rt.store_settings.update(**{key: value})
            except ConfigError as exc:
                self.rt.lifecycle_counters.add("refused_numbers")
                raise AdminError(f"{exc} ({key} is unchanged)") from None
            return Answer(f"{key} = {value}", data={"key": key, "value": value})
        known = ", ".join([*_HOST_SETTINGS, *_STORE_SETTINGS])
        raise AdminError(f"unknown setting {key!r} (known: {known})")


def build_registry(rt: Runtime) -> CommandRegistry:
    """The SPEC §7 commands for ``rt``, in their documented order."""
    c = _Commands(rt)
    reg = CommandRegistry()
    reg.register("events", c.events, usage="events [after_tick]",
                 help="count of stored events by type", args=(0, 1))
    reg.register("events.get", c.events_get, usage=EVENTS_GET_USAGE,
                 help="JSON array of the events of one type (or pattern: *, prefix*)",
                 args=(1, 4))
    reg.register("events.snapshot", c.events_snapshot, usage="events.snapshot [after_tick]",
                 help="JSON object of all stored events by type", args=(0, 1))
    reg.register("events.clear", c.events_clear, usage="events.clear [type]",
                 help="delete stored events (all, or one type)", args=(0, 1))
    reg.register("listeners", c.listeners, usage="listeners",
                 help="active handlers: script, engine, event type, id")
    reg.register("scripts", c.scripts, usage="scripts",
                 help="scripts: name, status, uptime, polls, handler errors")
    reg.register("script.reload", c.script_reload, usage="script.reload <name>",
                 help="reload a script's source; shared values survive", args=(1, 1))
    reg.register("script.stop", c.script_stop, usage="script.stop <name>",
                 help="stop a script (on_stop runs)", args=(1, 1))
    reg.register("script.start", c.script_start, usage="script.start <name>",
                 help="start a stopped script", args=(1, 1))
    register_eval(reg, rt)
    reg.register("shared.dump", c.shared_dump, usage="shared.dump <script>",
                 help="JSON object of a script's shared values", args=(1, 1))
    reg.register("settings", c.settings, usage="settings", help="current settings")
    reg.register("settings.set", c.settings_set, usage="settings.set <key> <value>",
                 help="change a setting; applies at once", args=(2, 2))
    return reg
