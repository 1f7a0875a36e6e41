"""One of a script's two engines, with the bridge its Lua library calls.

``ScriptEngine`` wraps a sandboxed ``LuaEngine`` and installs the script
globals (``script_env.lua``) into a fresh environment. The Lua library calls
back into the small set of Python functions built here (``_bridge``); they
are passed into Lua as plain callables, which the sandbox lets Lua call but
never inspect.

Delivery rules (SPEC §4), decided in ``_subscribe``:

* event engine: every ``events:on`` is a bus subscription whose handler runs
  the Lua handler at once, on the thread delivering the event (or, with
  deferred delivery, queues it for the event thread: ``host/deferred.py``);
* main engine, while the chunk loads: recorded but never delivered (the event
  engine delivers the same top-level handlers; no double delivery);
* main engine, from lifecycle code: a bus subscription that queues the event
  for the script thread (``on_deferred``), which runs it between polls.

Threads: the event engine is run by the bus's delivering thread; the main
engine by the scheduler thread running the script. ``LuaEngine``'s lock
makes sure no state is ever touched by two threads at once.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from types import FunctionType, MethodType
from typing import Any

from moonbus.bus import Bus, Event, Subscription
from moonbus.bus.cascade import CascadeLink
from moonbus.errors import CascadeError, ClosedError, ScriptError, ScriptLimitError
from moonbus.host.budget import make_handler_budget, remaining, spend
from moonbus.host.context import ScriptContext, script_seed
from moonbus.host.memory_caps import LOG_TRANSFER, ScriptLimitCounters, clip_line
from moonbus.host.source import ScriptSource
from moonbus.host.stats_panel import StatsPanel
from moonbus.lua.boundary import detached
from moonbus.lua.convert import ValueTooLarge
from moonbus.lua.engine import LuaEngine
from moonbus.lua.fastconvert import quick_pairs
from moonbus.lua.lua_room import admitted
from moonbus.lua.sandbox import gc_phase
from moonbus.lua.value_path import payload_error
from moonbus.shared.values import as_sequences

__all__ = ["LIFECYCLE_FUNCTIONS", "SHARED_METHODS", "ScriptEngine", "event_payload"]

SHARED_METHODS: Mapping[str, tuple[str, ...]] = {
    "int": ("get", "set", "increment", "decrement", "add", "subtract"),
    "float": ("get", "set", "add"),
    "string": ("get", "set", "append"),
    "bool": ("get", "set", "toggle"),
    "table": ("get", "set", "contains", "remove", "clear", "keys", "to_table", "increment"),
}
STOP_TOKEN = "\0moonbus:stop"
# What the main engine runs (SPEC §4): a script whose chunk defines none of
# them gets no main engine (``ScriptHost.start``).
LIFECYCLE_FUNCTIONS = ("on_start", "poll", "on_stop")
# Attributes holding Lua objects (or the C delivery, which holds the state), dropped by close.
_LUA_HELD = ("env", "_dispatch", "_deliver", "_forget", "_collect", "forget_cause",
             "returned_table", "_indexer", "_table_from", "_fast_deliver")

# Bridge entry -> the name a script knows it by (for error messages).
_LUA_NAMES: Mapping[str, str] = {
    "subscribe": "events.on", "unsubscribe": "events.off", "emit": "events.emit",
    "log": "logger", "stats_set": "stats.set", "stats_get": "stats.get",
    "stats_clear": "stats.clear", "shared_handle": "shared",
    "shared_contains": "shared.contains", "shared_remove": "shared.remove",
    "shared_clear": "shared.clear",
}


def event_payload(event: Event) -> dict[str, Any]:
    """What a Lua handler receives: the data fields plus ``tick`` (and ``type``,
    ``seq`` unless the data has fields of those names)."""
    payload = dict(event.data)
    payload.setdefault("tick", event.tick)
    payload.setdefault("type", event.type)
    payload.setdefault("seq", event.seq)
    return payload


class ScriptEngine:
    """A sandboxed engine plus the script library installed in it."""

    def __init__(
        self,
        *,
        kind: str,
        script_name: str,
        source: ScriptSource,
        options: Mapping[str, Any],
        shared: Any,
        stats: StatsPanel,
        limits: ScriptLimitCounters,
        ctx: ScriptContext,
        on_deferred: Callable[[int, Event], None],
        on_handler_error: Callable[[str, BaseException], None],
        env_source: str,
    ) -> None:
        self.kind = kind
        self.script_name = script_name
        self._source = source
        self._options = dict(options)
        self._shared = shared
        self._stats = stats
        self._limits = limits
        self._ctx = ctx
        self._bus: Bus = ctx.bus
        self._on_deferred = on_deferred
        self._on_handler_error = on_handler_error
        self.loading = True
        # Main engine: the cascade of the deferred handler running now (set by
        # the script thread around each step; None while poll/on_start run).
        self.cause: CascadeLink | None = None
        self.returned_table: Any = None
        self.subscriptions: dict[int, Subscription] = {}
        self.patterns: dict[int, str] = {}
        self._once_ids: set[int] = set()
        self._ids = itertools.count(1)
        self.handlers_refused = 0  # events:on past max_handlers_per_script
        # One handler time budget per event (host.budget), shared with the C delivery.
        self.budget = make_handler_budget(kind == "event" and ctx.native)
        self.engine: LuaEngine = ctx.factory.create(
            f"{script_name}:{kind}",
            memory_limit=ctx.settings.memory_limit,
            max_source_bytes=ctx.settings.max_source_bytes,
            generational_gc=True,  # thousands of long-lived states: little garbage each
        )
        self._gc_phase = gc_phase(ctx.factory.created)
        engine = self.engine
        self.converter = engine.converter
        self.converter.max_size = ctx.settings.max_host_value
        self.converter.max_size_setting = "max_host_value"
        self.converter.on_too_large = functools.partial(limits.count, "refused_host_values")
        self.converter.room.on_refused = functools.partial(limits.count, "refused_lua_values")
        # detached: errors keep no Lua value alive; deferred: calls timed (lua.boundary)
        timed = ctx.deferred.host_calls if kind == "event" and ctx.deferred else None
        self.converter.host_calls = timed
        self._detached = functools.partial(detached, timed=timed)
        self._table_from = engine.table_from
        self.env = engine.new_env()
        self._indexer: Any = None  # compiled by the first _index
        bridge = self._bridge()
        info = engine.table({
            "engine": kind,
            "event_types": dict(ctx.event_types),
            "stop_token": STOP_TOKEN,
            "shared_methods": {k: list(v) for k, v in SHARED_METHODS.items()},
        })
        info["sleep"] = engine.sleep_function
        info["message_handler"] = engine.message_handler
        info["host_function"] = engine.host_function_maker
        info["quick_bind"] = engine.quick_bind  # None: no quick host calls
        info["log_transfer"] = LOG_TRANSFER
        if ctx.random_seed is not None:
            info["random_seed"] = script_seed(ctx.random_seed, script_name, kind)
        installer = engine.compile(env_source, "=moonbus", engine.new_env(), capped=False)
        limit = ctx.settings.lifecycle_timeout
        lib = engine.call(installer, self.env, bridge, info, limit=limit)[0]
        self._dispatch = lib["dispatch"]
        self._deliver = lib["deliver"]
        self._forget = lib["forget"]
        self._collect = lib["collect"]
        self.forget_cause = lib["forget_cause"]  # see script_call.enter_host_call
        # deliver() in C (moonbus.lua.fastcall), when built: for non-once subscriptions.
        self._fast_deliver = engine.native_delivery(
            self._deliver, fallback=self.deliver, failed=self._delivery_failed,
            settings=ctx.settings, budget=self.budget, counts=ctx.delivery_counts,
        ) if kind == "event" and ctx.native else None

    # ------------------------------------------------------------------ bridge
    def _bridge(self) -> Any:
        # Every entry reaches Lua through host_function: a plain Lua function
        # whose errors are strings (SPEC §4b, moonbus.lua.host_errors).
        conv = self.converter
        to_py = conv.to_py
        to_lua = conv.to_lua
        functions: dict[str, Any] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "emit": self._emit,
            "log": self._log,
            "stats_set": self._stats.set,
            # to_lua measures it: max_stats_value may exceed a host call's room
            "stats_get": lambda key: to_lua(self._stats.get(key)),
            "stats_clear": self._stats.clear,
            "options": lambda: to_lua(self._options),
            "time": self._ctx.tick,
            "shared_handle": self._shared_handle,
            "shared_contains": lambda name: self._shared.contains(to_py(name)),
            "shared_remove": lambda name: self._shared.remove(to_py(name)),
            "shared_clear": lambda: self._shared.clear(),
            "apis": lambda: to_lua(self._ctx.apis_for(self.script_name)),
            "event_known": self._event_known,
            "undeclared_event": self._undeclared_event,
        }
        if self._ctx.virtual_clock is not None:
            functions["virtual_clock"] = self._ctx.virtual_clock
        if self._source.folder is not None:
            functions["require"] = self._require
        table, wrap = self.engine.table({}), self._detached
        for name, func in functions.items():
            table[name] = self.engine.host_function(wrap(func), _LUA_NAMES.get(name, name))
        return table

    def _subscribe(self, pattern: str, once: bool) -> int | str:
        """A handler id, or (over the cap) the refusal's message, which the Lua
        library raises itself: a refusal costs ~1 us instead of a host
        exception's ~50 us, so a script that retries under ``pcall`` 200,000
        times cannot hold ``start()`` for seconds with refusals."""
        limit = self._ctx.settings.max_handlers_per_script
        if len(self.patterns) >= limit:
            # Each handler costs every matching event a Lua call: bounded per script.
            self.handlers_refused += 1
            return (
                f"events.on: this script already has {len(self.patterns)} handlers "
                f"(max_handlers_per_script={limit}); remove some with events:off first"
            )
        sub_id = next(self._ids)
        self.patterns[sub_id] = pattern
        if (self.kind == "main" and self.loading) or self.engine.closed:
            # Loading: delivered by the event engine. Closed (the script stopped
            # itself in this call, see close): never delivered. Recorded for off().
            return sub_id
        if self.kind != "event":
            target: Callable[[int, Event], None] = self._on_deferred
        else:
            target = self.deliver if once or self._fast_deliver is None else self._fast_deliver
        deferred = self._ctx.deferred
        if self.kind == "event" and deferred is not None:
            handler = deferred.handler(target, sub_id)  # runs later, on the event thread
        elif target is self._fast_deliver and self._fast_deliver is not None:
            handler = self._fast_deliver.bind(sub_id)  # partial(target, sub_id), in C
        else:
            handler = functools.partial(target, sub_id)
        owner = f"{self.script_name}:{self.kind}"
        sub = (self._bus.once if once else self._bus.on)(pattern, handler, owner=owner)
        self.subscriptions[sub_id] = sub
        if once:
            self._once_ids.add(sub_id)
        return sub_id

    def _unsubscribe(self, sub_id: int) -> None:
        self.patterns.pop(sub_id, None)
        sub = self.subscriptions.pop(sub_id, None)
        if sub is not None:
            sub.cancel()

    def _event_known(self, name: str) -> bool:
        names = self._ctx.event_names
        # The main engine's top-level handlers are the event engine's (checked there).
        return names is None or (self.kind == "main" and self.loading) or names.known(name)

    def _undeclared_event(self, name: str, where: Any) -> None:
        names = self._ctx.event_names
        if names is not None:
            names.undeclared(self.script_name, name, where if isinstance(where, str) else "")

    def _emit(self, name: str, data: Any, handling: int | None = None) -> Any:
        """``events:emit``: the new event's seq, or (None, message) when a
        cascade limit refused it (the Lua library raises the message at the
        caller's line). ``handling``: the seq of the event whose handler runs
        now in the event engine (the Lua library passes it); in the main
        engine the host sets ``cause`` while a deferred handler runs. Either
        makes the new event count against that event's cascade (SPEC §4b)."""
        limit = self._ctx.settings.max_emit_size
        try:
            payload = None if data is None else self.converter.to_py(data, max_size=limit)
        except ValueTooLarge:
            # The bus log keeps the last ``log_size`` events: this bounds what
            # a script's events can hold there (SPEC §4b "pending emits"), and
            # the copy stops as soon as it passes the limit.
            self._limits.count("refused_emits")
            raise ScriptLimitError(
                f"events.emit: data of event '{name[:64]}' is larger than the limit of "
                f"{limit} bytes (max_emit_size)"
            ) from None
        if payload is not None and not isinstance(payload, dict):
            payload = {str(i + 1): v for i, v in enumerate(payload)}
        cause: int | CascadeLink | None = handling if self.kind == "event" else self.cause
        source = f"script:{self.script_name}"
        try:
            if cause is None:
                event = self._bus.emit(name, payload, source=source, tick=self._ctx.tick())
            else:
                event = self._bus.emit(name, payload, source=source, tick=self._ctx.tick(),
                                       cause=cause)
        except CascadeError as exc:
            return None, str(exc)
        if self._ctx.event_names is not None:
            self._ctx.event_names.learn(name)  # a custom event: declared from now on
        return event.seq

    def _log(self, level: str, message: Any, size: int) -> None:
        # Cut before any sink sees it: the recent-log buffer, the CLI panel,
        # --log-json and Python logging all get the clipped line. ``size`` is
        # the line's length in Lua (bytes): longer than ``message`` when Lua
        # cut it at LOG_TRANSFER already.
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        line = clip_line(message, self._ctx.settings.max_log_line, size)
        if line is not message:
            self._limits.count("truncated_log_lines")
        self._ctx.log(self.script_name, self.kind, level, line, self._ctx.tick())

    def _shared_handle(self, kind: str, name: Any) -> tuple[Any, ...]:
        """The methods of one shared handle, in ``SHARED_METHODS`` order, then
        its kind check: what ``shared:<kind>(name)`` runs on every later call
        (the name must not hold another kind now, SPEC §3), in C on the
        memory backend (``MemoryHandle.native_check``). Then (quick, its id) or
        (False, 0) for each (``_quick_pairs``)."""
        shared = self._shared
        handle = getattr(shared, kind)(name)
        methods = [getattr(handle, m) for m in SHARED_METHODS[kind]]

        def check() -> None:
            getattr(shared, kind)(name)  # raises the store's error

        native_check = getattr(handle, "native_check", None)
        checker = native_check(self._detached(check)) if native_check and self._ctx.native else None
        native_ops = getattr(handle, "native_ops", None)
        if native_ops is not None and self._ctx.native:  # C int ops (memory backend)
            ops = native_ops()
            methods = [ops.get(m, method) for m, method in zip(SHARED_METHODS[kind], methods,
                                                               strict=True)]
        quick = quick_pairs([*methods, checker], self.engine.quick_bind is not None)
        checker = self._detached(check) if checker is None else checker
        if kind == "string":  # a long string must fit in Lua first (lua_room)
            methods = [admitted(m, self.converter.to_lua, f"shared:string({name!r}):{op}()")
                       for m, op in zip(methods, SHARED_METHODS[kind], strict=True)]
        if kind != "table":
            # wrapped by script_env.lua's make_handle; C ops raise without a Python
            # frame, Python methods are detached (moonbus.lua.boundary)
            return (*(self._detached(m) if isinstance(m, MethodType | FunctionType) else m
                      for m in methods), checker, *quick)
        to_py, to_lua = self.converter.to_py, self.converter.to_lua

        def converted(method: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                return to_lua(as_sequences(method(*[to_py(a) for a in args])))
            return call

        return (*(self._detached(converted(m)) for m in methods), checker, *quick)

    def _require(self, module: str) -> Any:
        # Called from Lua: the compile shares the running call's deadline.
        text, chunkname = self._source.read_module(module)
        return self.engine.compile(
            text, chunkname, self.env, limit=self._ctx.settings.lifecycle_timeout
        )

    # ---------------------------------------------------------------- running
    def load_chunk(self) -> tuple[Any, ...]:
        """Compile and run the script's top-level code in this engine (each step
        under the lifecycle time limit: a source costly to parse is cut too)."""
        limit = self._ctx.settings.lifecycle_timeout
        chunk = self.engine.compile(self._source.text, self._source.chunkname, self.env,
                                    limit=limit)
        try:
            results = self.engine.call(chunk, limit=limit)
        finally:
            self.loading = False
        # One full collection (the setup's garbage is ~1/4 of a fresh engine), then its phase.
        self.engine.call(self._collect, self._gc_phase, limit=limit)
        if results and self.engine.lua_type(results[0]) == "table":
            self.returned_table = results[0]  # a script table (ScriptHost.call finds methods)
        return results

    def deliver(self, sub_id: int, event: Event) -> None:
        """Run one handler now, on the calling thread (event engine delivery),
        under what is left of this script's budget for the event (or not at
        all when it is spent: ``moonbus.host.budget``)."""
        limit = self._ctx.settings.handler_timeout
        seq = event.seq
        budget = self.budget
        left = None if limit is None else remaining(budget, seq, limit)
        if (left is not None or limit is None) and not budget.blocked:
            budget.calls += 1
            try:
                self.engine.call_event(
                    self._deliver, sub_id, event.data, event.tick, seq, event.type,
                    limit=None if left is None else left[0],
                )
            except (ScriptError, TypeError) as exc:
                self._handler_failed(sub_id, exc)
            except ClosedError:
                return  # the script stopped while this event was on its way
            finally:
                if left is not None:
                    spend(budget, seq, left[1])
        if sub_id in self._once_ids:
            self._once_ids.discard(sub_id)
            self.subscriptions.pop(sub_id, None)
            self.patterns.pop(sub_id, None)

    def _delivery_failed(
        self,
        sub_id: int,
        result: Any,
        failure: BaseException | None,
        reason: str | None,
        limit: float | None,
    ) -> None:
        """The C path's call did not end plainly: settle it as ``deliver`` does."""
        try:
            self.engine.outcome(result, failure, reason, limit)
        except (ScriptError, TypeError) as exc:
            self._handler_failed(sub_id, exc)

    def _handler_failed(self, sub_id: int, exc: BaseException) -> None:
        self._on_handler_error(f"handler for {self.patterns.get(sub_id, '?')!r}", exc)

    def deferred_task(self, sub_id: int, event: Event) -> Any:
        """A coroutine running one deferred handler (main engine, script thread)."""
        sub = self.subscriptions.get(sub_id)
        if sub is not None and not sub.active:
            self.subscriptions.pop(sub_id, None)
            if sub_id in self._once_ids:  # fired: no longer counts as a handler
                self._once_ids.discard(sub_id)
                self.patterns.pop(sub_id, None)
        self.budget.calls += 1  # the main engine's handler calls (ScriptHost.handler_calls)
        with self.engine.lock:
            try:
                payload = self.converter.to_lua(event_payload(event))
            except TypeError as exc:  # name the field that could not cross
                raise TypeError(payload_error(event.type, event.seq, event.data, event.tick,
                                              exc)) from exc
            task = self.engine.new_task(self._dispatch)
        return task, (sub_id, payload)

    def global_function(self, name: str) -> Any:
        """A global function of the script (``on_start``...), or None."""
        value = self._index(self.env, name)
        return value if self.engine.lua_type(value) == "function" else None

    def _index(self, table: Any, name: str) -> Any:
        """``table[name]`` as Lua sees it (a metatable's ``__index`` runs, so
        inherited methods count), as a guarded call under the lifecycle time
        limit: a hostile ``__index`` that loops or fails makes the start fail
        with a ScriptError instead of hanging the thread that starts the
        script (indexing through lupa ran it with no limit)."""
        indexer = self._indexer
        if indexer is None:
            indexer = self._indexer = self.engine.compile(
                "local t, k = ... return t[k]", "=lookup", self.env)
        return self.engine.call(indexer, table, name,
                                limit=self._ctx.settings.lifecycle_timeout)[0]

    def lifecycle_function(self, name: str) -> tuple[Any, tuple[Any, ...]] | None:
        """``(function, leading args)`` of lifecycle function ``name`` as the
        loaded chunk defines it, or None: a method of the table the chunk
        returned (called with the table as ``self``; globals do not count
        then), else a global function. Under the engine's lock: the event
        engine's handlers may be running on another thread."""
        with self.engine.lock:
            table = self.returned_table
            if table is not None:
                func = self._index(table, name)
                if func is not None and self.engine.lua_type(func) == "function":
                    return func, (table,)
                return None
            func = self.global_function(name)
            return (func, ()) if func is not None else None

    def defines_lifecycle(self) -> bool:
        """Whether the loaded chunk defines any of ``on_start``, ``poll``, ``on_stop``."""
        return any(self.lifecycle_function(name) is not None for name in LIFECYCLE_FUNCTIONS)

    def listeners(self) -> list[tuple[int, str]]:
        """(id, pattern) of the handlers this engine actually delivers."""
        return sorted((i, self.patterns.get(i, "?")) for i, s in self.subscriptions.items()
                      if s.active)

    def close(self) -> None:
        """Drop every bus subscription and release the Lua state. Cancelled
        twice: before the wait for a running handler (no new deliveries), and
        after it, for what that handler subscribed meanwhile (held by the bus,
        with the C delivery holding the state); ``_subscribe`` adds none then."""
        for _ in range(2):
            for sub in list(self.subscriptions.values()):
                sub.cancel()
            self.subscriptions.clear()
            if not self.engine.closed:
                self.engine.close()  # waits for a running call
        for name in _LUA_HELD:  # the state goes now, not at a cycle collector's pass
            setattr(self, name, None)
