"""``Recorder``: writes a recording of one runtime's run (``Runtime(record=FILE)``).

What it hooks (``moonbus.record.observer``):

* the bus's ``emit`` (an instance attribute, as the bus's own C path does):
  host objects in a host event's payload are replaced by recording proxies,
  and a host event emitted while an API call is running on the emitting
  thread is tied to that call (a replay emits it when it answers the call);
* a ``*`` subscriber: every committed event, in seq order, with its payload;
* ``register_api``: each host object scripts get is a recording proxy
  (``moonbus.record.proxies``); every call on it, and on every object it
  returns, is logged with its arguments and its answer (or error);
* ``load``: each script's files and options; ``close``: final values.

Threads: proxies and the bus call in from script threads, the event thread
and the game loop; one lock guards the ids, the buffers and the file. The
per-thread stack of running API calls is thread-local state of this
recorder (not of the module). Rows are written in batches of
``FLUSH_ROWS``; the file appears under its name at ``finish``.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moonbus.bus import Event
from moonbus.lua.exposure import exposed_methods, returns_multiple
from moonbus.record.codec import dumps, encode
from moonbus.record.proxies import ProxyBase, ProxyClasses
from moonbus.record.recording import FORMAT, RecordingWriter, ScriptRow

if TYPE_CHECKING:
    from moonbus.host.script import ScriptHost
    from moonbus.host.source import ScriptSource
    from moonbus.runtime import Runtime

__all__ = ["FLUSH_ROWS", "Recorder", "script_files"]

FLUSH_ROWS = 5_000
_SCALARS = (str, int, float, bool, type(None))


def script_files(source: ScriptSource) -> tuple[str, dict[str, str]]:
    """A script's entry (``x.lua`` or ``folder/``) and the text of every file it can read."""
    if source.folder is None:
        name = Path(source.path).name
        return name, {name: source.text}
    root = source.folder
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".lua", ".json"):
            files[f"{root.name}/{path.relative_to(root).as_posix()}"] = path.read_text("utf-8")
    return f"{root.name}/", files


class Recorder:
    """Records one run into ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self._writer = RecordingWriter(path)
        self.path = self._writer.path
        self._lock = threading.RLock()  # encoding may register a new object
        self._local = threading.local()
        self._classes = ProxyClasses()
        self._known_classes: set[type] = set()
        # (script, id(real object)) -> its proxy, while a script holds the proxy
        # (which keeps the object alive, so the id stays its own): a long run
        # whose API hands out fresh objects does not pile them up here.
        self._proxies: weakref.WeakValueDictionary[tuple[str | None, int], ProxyBase] = (
            weakref.WeakValueDictionary())
        self._views: dict[str, Mapping[str, Any]] = {}  # each script's API globals, kept
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self._events: list[tuple[int, int | None, str, str, str, int | None]] = []
        self._calls: list[tuple[Any, ...]] = []
        self._objects: list[tuple[int, str, str | None, str | None]] = []
        self._origins: dict[int, int] = {}
        self._apis: dict[str, dict[str, Any]] = {}
        self._scripts = 0
        self._last_tick = 0
        self._runtime: Runtime | None = None
        self._finished = False
        self.meta: dict[str, Any] = {"format": FORMAT, "started_at": time.time(),
                                     "tick_seconds": 0.6, "virtual": True}

    # ------------------------------------------------------------- observer
    def attach(self, runtime: Runtime) -> None:
        self._runtime = runtime
        bus = runtime.bus
        inner = bus.emit
        stack = self._stack

        def emit(type: str, data: Mapping[str, Any] | None = None, *,
                 source: str | None = None, tick: int | None = None, **more: Any) -> Event:
            host = source is None or not source.startswith("script:")
            if host and data:
                data = self._wrap(data, None)
            event = inner(type, data, source=source, tick=tick, **more)
            if host:
                running = stack()
                if running:
                    with self._lock:
                        self._origins[event.seq] = running[-1]
            return event

        bus.emit = emit  # type: ignore[method-assign]
        bus.on("*", self._on_event, owner="moonbus-record")
        settings = asdict(runtime.settings)
        self.meta.update(seed=runtime.seed, event_types=runtime.event_types,
                         event_delivery=runtime.event_delivery, settings=settings)

    def wrap_api(self, name: str, api: Any) -> Any:
        with self._lock:
            self._apis.setdefault("", {})[name] = encode(self._wrap(api, None), self._ref)
        return api

    def api_view(self, script: str, apis: Mapping[str, Any]) -> Mapping[str, Any]:
        with self._lock:
            view = {name: self._wrap(api, script) for name, api in apis.items()}
            self._views[script] = view
            self._apis[script] = {name: encode(v, self._ref) for name, v in view.items()}
        return view

    def script_loaded(self, name: str, source: ScriptSource, options: Mapping[str, Any]) -> None:
        entry, files = script_files(source)
        row = ScriptRow(name, entry, encode(dict(options), self._ref), files)
        with self._lock:
            self._writer.script(self._scripts, row)
            self._scripts += 1

    def note(self, **meta: Any) -> None:
        """Add run facts the runtime does not know (the app, ``tick_seconds``, ``virtual``)."""
        with self._lock:
            self.meta.update(meta)

    def abandon(self) -> None:
        """Drop the recording (the run never started): no file is left."""
        with self._lock:
            if not self._finished:
                self._finished = True
                self._writer.abandon()

    def finish(self, hosts: Sequence[ScriptHost]) -> None:
        """Write each script's final values and the rest, and put the file in place."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            try:
                for host in hosts:
                    self._writer.final(host.name, host.status,
                                       dumps(encode(host.shared.dump(), self._ref)),
                                       dumps(encode(host.stats, self._ref)))
                runtime = self._runtime
                self.meta.setdefault("ticks", max(self._last_tick,
                                                  (runtime.tick if runtime else 0) or 0))
                self.meta["apis"] = self._apis
                for key, value in self.meta.items():
                    self._writer.meta(key, value)
                self._flush()
                self._writer.origins(self._origins)
                self._writer.close()
            except BaseException:
                self._writer.abandon()
                raise

    # ---------------------------------------------------------------- events
    def _on_event(self, event: Event) -> None:
        data = dumps(encode(event.data, self._ref))
        with self._lock:
            if event.tick is not None and event.tick > self._last_tick:
                self._last_tick = event.tick
            self._events.append((event.seq, event.tick, event.type, event.source, data, None))
            if len(self._events) >= FLUSH_ROWS:
                self._flush()

    # ----------------------------------------------------------------- calls
    def _stack(self) -> list[int]:
        stack: list[int] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _call(self, proxy: ProxyBase, method: str, args: tuple[Any, ...]) -> Any:
        runtime = self._runtime
        with self._lock:
            call_id = next(self._call_ids)
            seq = runtime.bus.last_seq if runtime is not None else 0
            tick = runtime.tick if runtime is not None else None
        encoded_args = dumps(encode(list(args), self._ref))
        stack = self._stack()
        stack.append(call_id)
        try:
            result = getattr(ProxyBase.target_of(proxy), method)(*self._unwrap(args))
        except Exception as exc:
            error = dumps({"type": type(exc).__name__, "message": str(exc)})
            self._log_call((call_id, ProxyBase.id_of(proxy), method, encoded_args, None,
                            error, seq, tick))
            raise
        finally:
            stack.pop()
        wrapped = self._wrap(result, ProxyBase.script_of(proxy))
        self._log_call((call_id, ProxyBase.id_of(proxy), method, encoded_args,
                        dumps(encode(wrapped, self._ref)), None, seq, tick))
        return wrapped

    def _log_call(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._calls.append(row)
            if len(self._calls) >= FLUSH_ROWS:
                self._flush()

    # --------------------------------------------------------------- objects
    def _wrap(self, value: Any, script: str | None) -> Any:
        """``value`` with every host object replaced by ``script``'s recording proxy."""
        if isinstance(value, (*_SCALARS, ProxyBase)):
            return value
        if isinstance(value, Mapping):
            return {k: self._wrap(v, script) for k, v in value.items()}
        if isinstance(value, list):
            return [self._wrap(v, script) for v in value]
        if isinstance(value, tuple):
            return tuple(self._wrap(v, script) for v in value)
        methods = exposed_methods(type(value))
        if not methods:
            return value
        return self._proxy_for(value, methods, script)

    def _unwrap(self, value: Any) -> Any:
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, ProxyBase):
            return ProxyBase.target_of(value)
        if isinstance(value, dict):
            return {k: self._unwrap(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._unwrap(v) for v in value]
        return value

    def _proxy_for(self, obj: Any, methods: frozenset[str], script: str | None) -> ProxyBase:
        with self._lock:
            key = (script, id(obj))
            proxy = self._proxies.get(key)
            if proxy is not None and ProxyBase.target_of(proxy) is obj:
                return proxy
            cls = type(obj)
            name = cls.__name__
            ordered = sorted(methods)
            multi = [m for m in ordered if returns_multiple(getattr(cls, m))]
            if cls not in self._known_classes:
                self._known_classes.add(cls)
                self._writer.klass(name, ordered, multi)
            rec_id = next(self._ids)
            proxy = self._classes.get(name, ordered, multi)(rec_id, self._call, obj,
                                                            script=script)
            self._proxies[key] = proxy  # the proxy keeps obj alive: the id stays its own
            try:
                json_form: str | None = dumps(encode(proxy.__moonbus_json__(), _no_ref))
            except (TypeError, ValueError):
                json_form = None  # not a value object: it has no JSON form
            self._objects.append((rec_id, name, script, json_form))
            return proxy

    def _ref(self, value: Any) -> int | None:
        if isinstance(value, ProxyBase):
            return ProxyBase.id_of(value)
        if exposed_methods(type(value)):
            return ProxyBase.id_of(self._wrap(value, None))
        return None

    # ------------------------------------------------------------------ file
    def _flush(self) -> None:
        """Write the buffered rows (caller holds the lock)."""
        if self._objects:
            self._writer.objects(self._objects)
            self._objects = []
        if self._events:
            self._writer.events(self._events)
            self._events = []
        if self._calls:
            self._writer.calls(self._calls)
            self._calls = []


def _no_ref(value: Any) -> int | None:
    return None

