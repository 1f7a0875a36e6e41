"""The recorded game, without the game: an ``App`` built from a recording alone.

``ReplayApp`` declares the recorded event types; its ``ReplayWorld`` feeds
the host events recorded outside API calls at their ticks (one tick per
``step``, in seq order; events without a tick go with the tick before them)
and gives scripts stand-ins of the recorded API objects
(``moonbus.record.proxies``) whose calls are answered from the recording:

* the calls of one method on one object are answered in the order they were
  recorded; the arguments must match (as recorded JSON), else the call is a
  divergence and ``ReplayDivergenceError`` is raised into the script;
* the host events the game emitted during the recorded call are emitted
  again, in order, before the answer is returned; a recorded error is raised
  again (same class when it is a moonbus or builtin exception, with the same
  message).

Nothing of the recorded app is imported. Threads: the replay runs in virtual
time, on the control thread (and the event thread in deferred delivery);
``answer`` locks.
"""

from __future__ import annotations

import builtins
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import moonbus.errors
from moonbus.app import EventSpec
from moonbus.bus import Bus
from moonbus.errors import GameApiError
from moonbus.lua.exposure import returns_multiple
from moonbus.record.codec import decode, encode, same
from moonbus.record.proxies import ProxyBase, ProxyClasses
from moonbus.record.recording import CallRow, EventRow, Recording
from moonbus.replay.divergence import Divergence, ReplayDivergenceError, short

__all__ = ["ReplayApp", "ReplayBook", "ReplayWorld"]

DivergenceSink = Callable[[Divergence], None]


def _rebuild_error(error: Mapping[str, Any]) -> Exception:
    name, message = str(error.get("type")), str(error.get("message"))
    for where in (moonbus.errors, builtins):
        cls = getattr(where, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(message)
            except TypeError:
                break
    return GameApiError(message)


class ReplayBook:
    """Everything a replay answers from: objects, calls, host events by tick and by call."""

    def __init__(self, recording: Recording, until: int | None) -> None:
        self.meta = recording.meta
        self._classes = recording.classes()
        self._objects = recording.objects()
        self._made: dict[int, ProxyBase] = {}
        self._proxy_classes = ProxyClasses()
        self.lock = threading.Lock()
        self.calls: dict[tuple[int, str], deque[CallRow]] = defaultdict(deque)
        for call in recording.calls():
            self.calls[(call.obj, call.method)].append(call)
        self.by_tick: dict[int, list[EventRow]] = defaultdict(list)
        self.by_call: dict[int, list[EventRow]] = defaultdict(list)
        # What scripts emitted, by stream_key: per script in a virtual-time
        # recording; per script and event type in a real-time one, where a
        # script's poll (main engine) and handlers (event engine) interleaved
        # as the threads happened to run.
        self.by_type = not recording.meta.get("virtual", True)
        self.expected: dict[tuple[str, str], deque[EventRow]] = defaultdict(deque)
        self.last_seq = 0
        self.until_tick: int | None = None
        tick = 0
        for row in recording.events():
            self.last_seq = row.seq
            if row.tick is not None:
                tick = row.tick
            if until is not None and row.seq == until:
                self.until_tick = tick
            if until is not None and row.seq > until:
                continue
            if row.from_script:
                self.expected[self.stream_key(row.source, row.type)].append(row)
            elif row.call is not None:
                self.by_call[row.call].append(row)
            else:
                self.by_tick[tick].append(row)
        if until is not None and self.until_tick is None:
            self.until_tick = tick
        self.on_call: Callable[[ProxyBase, str, tuple[Any, ...]], Any] | None = None

    def stream_key(self, source: str, type_: str) -> tuple[str, str]:
        return (source, type_ if self.by_type else "")

    def obj(self, rec_id: int) -> ProxyBase:
        """The stand-in for recorded object ``rec_id`` (one per id)."""
        proxy = self._made.get(rec_id)
        if proxy is None:
            class_name, script, json_form = self._objects[rec_id]
            methods, multi = self._classes.get(class_name, ([], []))
            cls = self._proxy_classes.get(class_name, methods, multi)
            proxy = cls(rec_id, self._answer, None, json_form, script)
            self._made[rec_id] = proxy
        return proxy

    def _answer(self, proxy: ProxyBase, method: str, args: tuple[Any, ...]) -> Any:
        assert self.on_call is not None, "the replay world answers calls"
        return self.on_call(proxy, method, args)

    def calls_left(self) -> list[CallRow]:
        return sorted((c for q in self.calls.values() for c in q), key=lambda c: c.id)


def ref(value: Any) -> int | None:
    """How a replay names a stand-in in encoded data (as the recorder did)."""
    return ProxyBase.id_of(value) if isinstance(value, ProxyBase) else None


def call_text(proxy_class: str, method: str, args: Any) -> str:
    return f"{proxy_class}:{method}({short(args)[1:-1]})"


class ReplayWorld:
    """One replay's world (see the module docstring)."""

    def __init__(self, book: ReplayBook, bus: Bus, diverged: DivergenceSink) -> None:
        self._book = book
        self._bus = bus
        self._diverged = diverged
        self._tick = 0
        self.calls_answered = 0
        self.host_events = 0
        book.on_call = self.answer
        self._feed(book.by_tick.pop(0, []))

    @property
    def tick(self) -> int:
        return self._tick

    def apis(self) -> Mapping[str, Any]:
        """The API globals as the host registered them (each script gets its own:
        ``api_view``)."""
        return self.api_view("", {})

    def api_view(self, script: str, apis: Mapping[str, Any]) -> Mapping[str, Any]:
        recorded = self._book.meta.get("apis", {}).get(script, {})
        return {name: decode(value, self._book.obj) for name, value in recorded.items()}

    def step(self) -> int:
        self._tick += 1
        self._feed(self._book.by_tick.pop(self._tick, []))
        return self._tick

    def status_line(self) -> str:
        return f"replaying tick {self._tick} of {self._book.meta.get('ticks')}"

    def summary(self) -> Mapping[str, Any] | None:
        return None

    def _feed(self, rows: Sequence[EventRow]) -> None:
        for row in rows:
            self.host_events += 1
            self._bus.emit(row.type, decode(row.data, self._book.obj), source=row.source,
                           tick=row.tick)

    def answer(self, proxy: ProxyBase, method: str, args: tuple[Any, ...]) -> Any:
        """Answer one API call from the recording (see the module docstring)."""
        book = self._book
        class_name = type(proxy).__name__
        actual_args = encode(list(args), ref)
        with book.lock:
            queue = book.calls.get((ProxyBase.id_of(proxy), method))
            recorded = queue[0] if queue else None
            if recorded is None or not same(recorded.args, actual_args):
                actual = call_text(class_name, method, actual_args)
                tick: int | None
                if recorded is None:
                    expected = f"no further call of {class_name}:{method} on this object"
                    seq, tick = self._bus.last_seq, self._tick
                else:
                    expected = call_text(class_name, method, recorded.args)
                    seq, tick = recorded.seq, recorded.tick
                self._diverged(Divergence("api call", seq, tick, ProxyBase.script_of(proxy),
                                          expected, actual, self._bus.last_seq, self._tick))
                raise ReplayDivergenceError(
                    f"replay divergence: {actual} was not recorded (expected {expected})"
                )
            assert queue is not None
            queue.popleft()
            self.calls_answered += 1
        self._feed(book.by_call.pop(recorded.id, []))
        if recorded.error is not None:
            raise _rebuild_error(recorded.error)
        result = decode(recorded.result, book.obj)
        if isinstance(result, list) and returns_multiple(getattr(type(proxy), method)):
            return tuple(result)
        return result


class ReplayApp:
    """The ``App`` of a recording: its event types, and a ``ReplayWorld`` per run."""

    def __init__(self, book: ReplayBook, diverged: DivergenceSink) -> None:
        self._book = book
        self._diverged = diverged
        app = book.meta.get("app") or {}
        self.name = f"replay of {app.get('name', 'a run')}"
        self.world: ReplayWorld | None = None

    def event_types(self) -> Sequence[EventSpec]:
        types: Mapping[str, str] = self._book.meta.get("event_types") or {}
        return [EventSpec(name=name, key=key) for key, name in types.items()]

    def create(self, *, seed: int, bus: Bus) -> ReplayWorld:
        self.world = ReplayWorld(self._book, bus, self._diverged)
        return self.world
