"""What keeps the server's share of the game's GIL small with many SSE clients:
the pump interval stretches with the clients (``max_sends``), and events are
encoded with one reusable C encoder, to the same text as ``Event.to_json``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from tests.http.streams_support import frames, serve, when_joined

from moonbus import Runtime
from moonbus.bus.event import Event
from moonbus.errors import ConfigError
from moonbus.http.event_backlog import encode_event
from moonbus.http.fanout import FanOut
from moonbus.http.responses import json_bytes
from moonbus.http.stream_settings import StreamSettings
from moonbus.http.streams import StreamRoutes


@dataclass(frozen=True)
class Spot:
    x: int
    name: str


class Money:
    def __moonbus_json__(self) -> dict[str, object]:
        return {"copper": 5}


@pytest.mark.parametrize("event", [
    Event.create("player:moved", {"x": 1, "y": -1}, seq=5, tick=3, ts=1),
    Event.create('odd "type"\n', {"nested": {"k": [1, 2.5, {"z": None}], 3: "é\n\u2028"},
                                  "n": math.nan, "i": -math.inf, "t": True, "big": 2**70},
                 seq=6, tick=None, ts=2, source="lua"),
    Event.create("empty", None, seq=7, tick=0, ts=3, source="moonbus"),
    Event.create("objects", {"spot": Spot(1, "mine"), "money": Money(), "list": (1, (2,))},
                 seq=8, tick=9, ts=4),
    Event.create("inner", {"event": Event.create("x", {"a": 1}, seq=1, ts=1),
                           "keys": {1: "int", 2.5: "float", None: "none"}}, seq=9, ts=5),
])
def test_frames_carry_exactly_event_to_json(event: Event) -> None:
    """The fast encoder writes what ``Event.to_json`` writes; an event with a
    non-finite float is the one exception: it carries ``GET /api/events``'s
    JSON (``"NaN"`` as text), which a browser's ``JSON.parse`` accepts."""
    seq, frame = encode_event(event)
    assert seq == event.seq
    text = event.to_json()
    if "NaN" in text or "Infinity" in text:
        data = json_bytes(event.to_dict())
        assert b"NaN" in data and b":NaN" not in data
    else:
        data = text.encode()
    assert frame == b"id: %d\nevent: event\ndata: %s\n\n" % (event.seq, data)


def test_data_the_json_cannot_take_fails_as_to_json_does() -> None:
    event = Event.create("bad", {"x": 1}, seq=1)
    bad = event._replace(data={"x": object()})
    with pytest.raises(TypeError, match="not JSON-encodable"):
        bad.to_json()
    with pytest.raises(TypeError, match="not JSON-encodable"):
        encode_event(bad)


def test_the_pump_interval_stretches_with_the_clients() -> None:
    async def scenario() -> None:
        def attach(push: Callable[[int], None]) -> Callable[[], None]:
            return lambda: None

        hub: FanOut[int] = FanOut(attach=attach, encode=lambda i: (i, b"."), capacity=10,
                                  max_clients=100, pump_interval=0.005, inbox=100,
                                  max_sends=2_000)
        for _ in range(10):
            hub.join(None)
        assert hub.interval == 0.005  # 10 clients x 200 pumps/s = 2,000 sends/s
        for _ in range(40):
            hub.join(None)
        assert hub.interval == pytest.approx(0.025)  # 50 clients: 40 pumps/s
        hub.close()

    asyncio.run(scenario())


def test_max_sends_setting_is_checked_and_pumps_are_counted() -> None:
    with pytest.raises(ConfigError, match="max_sends"):
        StreamSettings(max_sends=0)
    with Runtime(threaded=False) as rt:
        streams = StreamRoutes(rt, StreamSettings(max_sends=10))  # 1 client: every 100 ms
        intervals: list[float] = []

        def emit() -> None:
            intervals.append(streams.events.interval)
            rt.bus.emit("hello", {"n": 1})

        with serve(streams.routes, streams.close) as base, \
                httpx.Client(timeout=10) as client:
            thread = when_joined(streams.events, emit)
            with client.stream("GET", base + "/api/stream/events") as response:
                got = next(frames(response))
            thread.join(10)
        assert got.event == "event" and got.data is not None and '"hello"' in got.data
        assert intervals == [pytest.approx(0.1)]
        assert streams.statistics()["events"].pumps >= 1
