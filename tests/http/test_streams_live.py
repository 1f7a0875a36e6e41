"""Slow clients are dropped (never a growing queue), heartbeats, the log stream
with its level filter, and the fan-out hub's bounds without a server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.http.streams_support import Frame, frames, serve, when_joined

from moonbus import Runtime
from moonbus.errors import ConfigError
from moonbus.http.fanout import FanOut
from moonbus.http.stream_settings import StreamSettings
from moonbus.http.streams import StreamRoutes

pytest.importorskip("sse_starlette")


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime(threaded=False)
    yield runtime
    runtime.close()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_client_that_does_not_read_is_dropped_with_a_final_message(rt: Runtime) -> None:
    streams = StreamRoutes(rt, StreamSettings(client_buffer=100))
    with serve(streams.routes, streams.close) as base:
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /api/stream/events HTTP/1.1\r\nHost: x\r\n\r\n")
        _wait(lambda: streams.events.statistics().clients == 1, "the client to join")
        payload = {"text": "x" * 2_000}
        for _ in range(20):  # ~40 MB offered: far past any socket buffer and 100 events
            for _ in range(1_000):
                rt.bus.emit("big", payload)
            if streams.events.statistics().clients_dropped:
                break
            time.sleep(0.02)
        _wait(lambda: streams.events.statistics().clients_dropped == 1, "the drop")
        stats = streams.events.statistics()
        assert stats.clients == 0 and stats.clients_dropped_behind == 0
        assert [s for s in rt.bus.subscriptions() if s.owner == "http:stream"] == []
        # Now read everything it was sent: events, then the final message, then the end.
        sock.settimeout(20)
        received = bytearray()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)
            if b"event: dropped" in received and received.endswith(b"0\r\n\r\n"):
                break
        sock.close()
    text = received.decode()
    assert "event: dropped" in text
    assert 'slow client: 100 items were waiting to be sent' in text
    tail = text[text.index("event: dropped"):]
    assert "event: event" not in tail, "nothing after the final message"


def test_heartbeat_comments_come_on_an_idle_stream(rt: Runtime) -> None:
    streams = StreamRoutes(rt, StreamSettings(heartbeat=0.2))
    with serve(streams.routes, streams.close) as base, httpx.Client(timeout=10) as client:
        started = time.monotonic()
        with client.stream("GET", base + "/api/stream/events") as response:
            pings = []
            for frame in frames(response):
                assert frame.event is None
                pings.append(frame.comments)
                if len(pings) == 2:
                    break
    assert pings == [["ping"], ["ping"]]
    assert time.monotonic() - started >= 0.35


def _read_logs(streams: StreamRoutes, url: str, count: int,
               after_open: Callable[[], None]) -> list[Frame]:
    got: list[Frame] = []
    when_joined(streams.logs, after_open)
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        for frame in frames(response):
            if frame.event is not None:
                got.append(frame)
                if len(got) == count:
                    break
    return got


def test_log_stream_filters_by_level(rt: Runtime) -> None:
    streams = StreamRoutes(rt)

    def write() -> None:
        for level in ("debug", "info", "warn", "error", "info", "error"):
            rt.host_log("miner", level, f"a {level} line")

    with serve(streams.routes, streams.close) as base:
        warn = _read_logs(streams, base + "/api/stream/logs?level=warn", 3, write)
        everything = _read_logs(streams, base + "/api/stream/logs", 6, write)
    assert [f.json()["level"] for f in warn] == ["warn", "error", "error"]
    assert all(f.event == "log" for f in warn)
    assert warn[0].json() == {"tick": None, "script": "miner", "engine": "host",
                              "level": "warn", "msg": "a warn line"}
    assert [f.json()["level"] for f in everything] == ["debug", "info", "warn", "error",
                                                       "info", "error"]
    assert streams.logs.statistics().clients == 0, "the sinks were removed"


def test_log_stream_tail_sends_recent_lines_once(rt: Runtime) -> None:
    streams = StreamRoutes(rt)
    for i in range(5):
        rt.host_log("s", "info", f"old {i}")
    got: list[str] = []
    with serve(streams.routes, streams.close) as base, httpx.Client(timeout=10) as client, \
            client.stream("GET", base + "/api/stream/logs?tail=3") as response:
        for frame in frames(response):
            if frame.event == "log":
                got.append(frame.json()["msg"])
                if len(got) == 3:
                    rt.host_log("s", "info", "new")  # the tail is out: now a live line
                if len(got) == 4:
                    break
    assert got == ["old 2", "old 3", "old 4", "new"]


@pytest.mark.parametrize(("query", "message"), [
    ("?level=loud", "level must be one of debug, info, warn, error"),
    ("?tail=x", "tail must be a whole number"),
    ("?tail=-1", "tail must be >= 0"),
])
def test_log_stream_bad_input_is_400(rt: Runtime, query: str, message: str) -> None:
    streams = StreamRoutes(rt)
    with serve(streams.routes, streams.close) as base:
        response = httpx.get(base + "/api/stream/logs" + query, timeout=10)
    assert response.status_code == 400 and message in response.json()["error"]


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ConfigError, match="client_buffer"):
        StreamSettings(client_buffer=0)
    with pytest.raises(ConfigError, match="heartbeat"):
        StreamSettings(heartbeat=float("nan"))
    with pytest.raises(ConfigError, match="max_clients"):
        StreamSettings(max_clients=True)


def test_hub_drops_every_client_when_the_inbox_overflowed_between_two_pumps() -> None:
    detached: list[bool] = []

    async def scenario() -> None:
        pushes: list[Callable[[int], None]] = []

        def attach(push: Callable[[int], None]) -> Callable[[], None]:
            pushes.append(push)
            return lambda: detached.append(True)

        hub: FanOut[int] = FanOut(attach=attach, encode=lambda i: (i, b"%d" % i),
                                  capacity=10, max_clients=5, pump_interval=60.0, inbox=10)
        fast, slow = hub.join(None), hub.join(lambda i: i % 2 == 0)
        assert fast is not None and slow is not None
        for i in range(1, 6):
            pushes[0](i)
        assert hub.pump() == 5
        assert fast.take() == b"12345" and slow.take() == b"24"
        for i in range(100):  # the loop thread was starved: the inbox overflowed
            pushes[0](i)
        hub.pump()
        assert fast.dropped is not None and "fell behind" in fast.dropped
        assert slow.dropped is not None
        stats = hub.statistics()
        assert stats.clients == 0 and stats.clients_dropped_behind == 2
        hub.close()

    asyncio.run(scenario())
    assert detached == [True]


def test_hub_drops_only_the_client_whose_buffer_is_full() -> None:
    async def scenario() -> None:
        pushes: list[Callable[[int], None]] = []

        def attach(push: Callable[[int], None]) -> Callable[[], None]:
            pushes.append(push)
            return lambda: None

        hub: FanOut[int] = FanOut(attach=attach, encode=lambda i: (i, b"."),
                                  capacity=4, max_clients=5, pump_interval=60.0, inbox=100)
        reader, idle = hub.join(None), hub.join(None)
        assert reader is not None and idle is not None
        for _ in range(3):
            for i in range(3):
                pushes[0](i + 1)
            hub.pump()
            reader.take()
        assert reader.dropped is None and idle.dropped is not None
        assert "slow client: 4 items" in idle.dropped
        assert idle.queued == 0, "a dropped client's buffer is freed"
        assert hub.statistics().clients == 1 and hub.statistics().clients_dropped == 1
        hub.close()

    asyncio.run(scenario())


def test_clients_of_one_filter_share_one_chunk_and_covered_cuts_inside_it() -> None:
    async def scenario() -> None:
        pushes: list[Callable[[int], None]] = []
        encoded: list[int] = []

        def encode(i: int) -> tuple[int, bytes]:
            encoded.append(i)
            return i, b"<%d>" % i

        def attach(push: Callable[[int], None]) -> Callable[[], None]:
            pushes.append(push)
            return lambda: None

        hub: FanOut[int] = FanOut(attach=attach, encode=encode, capacity=100, max_clients=5,
                                  pump_interval=60.0, inbox=100)
        a, b = hub.join(None, group="*"), hub.join(None, group="*")
        odd = hub.join(lambda i: i % 2 == 1, group="odd")
        assert a is not None and b is not None and odd is not None
        b.covered = 3  # b resumed: it has 1..3 from the backlog
        for i in range(1, 6):
            pushes[0](i)
        hub.pump()
        assert encoded == [1, 2, 3, 4, 5], "each item is encoded once for all clients"
        assert a._buffer[0] is b._buffer[0], "one chunk, shared"
        assert a.take() == b"<1><2><3><4><5>"
        assert b.take() == b"<4><5>"
        assert odd.take() == b"<1><3><5>"
        assert hub.statistics().items_queued == 5 + 5 + 3
        hub.close()

    asyncio.run(scenario())
