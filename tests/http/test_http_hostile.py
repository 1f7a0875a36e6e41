"""Hostile clients against a real server: what they must not be able to do to
the operator (lock the API, grow the server's memory) and what garbage they may
send (branch h14-attack)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.http.helpers import AUTH, TOKEN

from moonbus.errors import ConfigError
from moonbus.http.server import HttpServer
from moonbus.http.settings import HttpSettings
from moonbus.runtime import Runtime


@pytest.fixture
def small(rt: Runtime) -> Iterator[HttpServer]:
    """A real server with room for only 4 requests in flight."""
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN, max_inflight=4,
                                         shutdown_timeout=1.0)).start()
    try:
        yield server
    finally:
        server.stop()


def _stuck_clients(server: HttpServer, count: int, request: bytes) -> list[socket.socket]:
    """``count`` connections that pipeline ``request`` and never read an answer."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.send(request * 300)
        socks.append(sock)
    return socks


def _until_no_more_answers(server: HttpServer, limit: float = 20.0) -> None:
    """Wait until the server has answered no request for half a second."""
    deadline = time.monotonic() + limit
    served = -1
    while served != server.statistics().requests and time.monotonic() < deadline:
        served = server.statistics().requests
        time.sleep(0.5)


@pytest.mark.parametrize("path", ["/static/console.js", "/api/scripts"])
def test_clients_without_the_token_cannot_take_the_operators_request_slots(
        small: HttpServer, path: str) -> None:
    # Answers nobody reads stall their sends; before the fix each stalled answer
    # (an open file or a 401) held one of the max_inflight slots, so a few
    # anonymous connections made every call of the operator a 503.
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    socks = _stuck_clients(small, 8, request)
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=small.url, headers=AUTH, timeout=5) as client:
            statuses = [client.get("/api/scripts").status_code for _ in range(5)]
        assert statuses == [200] * 5
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("key", ["retention_ticks", "retention_count"])
def test_a_retention_past_sqlite_integers_is_refused_and_the_store_keeps_working(
        served: HttpServer, rt: Runtime, key: str) -> None:
    # Before the fix the value was taken, and from then on every append that
    # pruned raised OverflowError (SQLite INTEGER is 64-bit): the store lost
    # nearly every event.
    before = rt.lifecycle_counters.refused_numbers
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=5) as client:
        r = client.put(f"/api/settings/{key}", json={"value": 10 ** 30})
        assert r.status_code == 400, r.text
        assert "2^63" in r.json()["error"] or str(2 ** 63 - 1) in r.json()["error"]
        assert client.put(f"/api/settings/{key}", json={"value": 2 ** 63 - 1}).status_code == 200
    assert rt.lifecycle_counters.refused_numbers == before + 1
    for i in range(300):
        rt.bus.emit("hostile:tick", {"i": i}, tick=i)
    assert rt.event_store is not None
    rt.event_store.flush()
    assert len(rt.event_store.query(types="hostile:tick", limit=1000)) == 300


def test_a_client_that_does_not_read_big_events_is_dropped_by_bytes(rt: Runtime) -> None:
    # 10,000 items of up to 32 KiB each fit the item bound: before the byte
    # bound, one stalled client (per type filter) could make the server hold
    # ~320 MB. Now it is dropped once 256 KiB wait for it.
    from tests.http.streams_support import serve

    from moonbus.http.stream_settings import StreamSettings
    from moonbus.http.streams import StreamRoutes

    streams = StreamRoutes(rt, StreamSettings(client_buffer_bytes=256 * 1024))
    with serve(streams.routes, streams.close) as base:
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /api/stream/events HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while streams.events.statistics().clients != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        payload = {"blob": "x" * 30_000}
        for _ in range(60):  # up to 1,200 events, ~36 MB: far fewer than 10,000 items
            for _ in range(20):
                rt.bus.emit("big", payload)
            if streams.events.statistics().clients_dropped:
                break
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while streams.events.statistics().clients_dropped != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        sock.close()
    assert streams.events.statistics().clients_dropped == 1


def test_the_byte_bound_is_a_checked_setting() -> None:
    from moonbus.errors import ConfigError
    from moonbus.http.stream_settings import StreamSettings

    assert StreamSettings().client_buffer_bytes == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match="client_buffer_bytes"):
        StreamSettings(client_buffer_bytes=0)


def test_ipv6_guessers_cannot_evade_the_throttle_by_changing_the_host_part(app) -> None:  # type: ignore[no-untyped-def]
    # One end user gets a whole /64; counting per /128 gave a guesser 2^64
    # buckets (unlimited guesses, and enough to push everyone else's penalties
    # out of the auth_max_tracked records).
    from tests.http.helpers import make_call

    call = make_call(app)
    burst = HttpSettings().auth_burst
    for n in range(burst):
        r = call("GET", "/api/scripts", token="guess", addr=f"2001:db8:1:2::{n + 1:x}")
        assert r.status_code == 401
    same_net = "2001:db8:1:2:ffff::9"
    assert call("GET", "/api/scripts", token="guess", addr=same_net).status_code == 429
    # An IPv4-mapped address is its IPv4 address.
    for _ in range(burst):
        call("GET", "/api/scripts", token="guess", addr="::ffff:10.7.7.7")
    assert call("GET", "/api/scripts", token="guess", addr="10.7.7.7").status_code == 429
    # Another /64 and another IPv4 address are not touched.
    assert call("GET", "/api/scripts", addr="2001:db8:1:3::1").status_code == 200
    assert call("GET", "/api/scripts", addr="10.7.7.8").status_code == 200
    from moonbus.errors import ConfigError

    with pytest.raises(ConfigError, match="auth_ipv6_prefix"):
        HttpSettings(auth_ipv6_prefix=129)


def _strict_json(text: str) -> object:
    """JSON as a browser's JSON.parse reads it: NaN and Infinity are errors."""
    import json

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_stream_frames_of_events_with_nan_data_are_valid_json(rt: Runtime) -> None:
    # A script's events.emit("x", {v = 0/0}) used to go out as `"v":NaN`, which
    # JSON.parse refuses: the console silently dropped such events from its
    # feed (a script could hide its events). Now they read as /api/events
    # answers them: "NaN", "Infinity", "-Infinity".
    from tests.http.streams_support import frames, serve, when_joined

    from moonbus.http.streams import StreamRoutes

    rt.bus.emit("odd", {"v": float("nan"), "w": [float("inf")], "t": "NaN"})  # backlog
    streams = StreamRoutes(rt)
    with serve(streams.routes, streams.close) as base:
        live = when_joined(streams.events, lambda: rt.bus.emit("odd", {"v": float("-inf")}))
        datas = []
        with httpx.stream("GET", base + "/api/stream/events?type=odd",
                          headers={"Last-Event-ID": "0"}, timeout=10) as r:
            for frame in frames(r):
                if frame.event == "event":
                    datas.append(frame.data)
                if len(datas) == 2:
                    break
        live.join(5)
    parsed = [_strict_json(d or "") for d in datas]
    assert [p["data"] for p in parsed] == [  # type: ignore[index]
        {"v": "NaN", "w": ["Infinity"], "t": "NaN"}, {"v": "-Infinity"}]


@pytest.mark.parametrize("query", ["after_seq=9223372036854775808", f"after_tick={10 ** 30}",
                                   "after_seq=9223372036854775808&format=ndjson"])
def test_bounds_past_sqlite_integers_are_400_not_500(served: HttpServer, rt: Runtime,
                                                      query: str) -> None:
    # Before the fix the durable store raised OverflowError: a 500 with a
    # traceback in the server's log for every such request.
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=5) as client:
        r = client.get(f"/api/events?{query}")
        assert r.status_code == 400, r.text
        assert "2^63-1" in r.json()["error"]
        assert client.get("/api/events?after_seq=9223372036854775807").status_code == 200
    assert served.statistics().internal_errors == 0
    assert "events.get" in rt.admin.call(["help"]).text  # the registry still answers


def test_connections_that_never_finish_a_request_head_are_closed(rt: Runtime) -> None:
    # uvicorn starts no timer on a new connection: a connection that sends
    # nothing, or drips a request head a byte at a time, stayed open forever,
    # so a few thousand of them used up the server's file descriptors
    # (slowloris) and the operator could no longer connect.
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN, head_timeout=0.5)).start()
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        dripping = socket.create_connection(("127.0.0.1", server.port))
        kept = socket.create_connection(("127.0.0.1", server.port))
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 1.5
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            if time.monotonic() > deadline:
                break
            with contextlib.suppress(OSError):
                dripping.send(bytes([byte]))
            time.sleep(0.05)
        for sock in (silent, dripping):
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""  # closed by the server
            sock.close()
        kept.settimeout(5)
        assert b"200 OK" in kept.recv(4096)  # a finished request was answered
        kept.close()
        assert server.statistics().head_timeouts >= 2
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
            assert client.get("/api/scripts").status_code == 200
    finally:
        server.stop()


def test_a_flood_of_idle_connections_cannot_keep_the_operator_out(rt: Runtime) -> None:
    # head_timeout bounds how long one idle connection lives, not how many:
    # a client opening them faster than they expire held every file descriptor
    # the process had. Now at most max_connections are open; a newcomer
    # evicts the oldest idle one, and a connection serving a request is kept.
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN, max_connections=4)).start()
    try:
        idle: list[socket.socket] = []
        stream = socket.create_connection(("127.0.0.1", server.port))
        stream.sendall(b"GET /api/stream/events HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        stream.settimeout(5)
        assert b"200 OK" in stream.recv(4096)  # a live stream: serving a request
        idle += [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
            assert client.get("/api/scripts").status_code == 200
        stats = server.statistics()
        assert stats.connections_evicted == 8  # 11 idle/new ones through 3 free places
        assert stats.connections_refused == 0
        closed = 0
        for sock in idle:  # the 8 oldest were evicted (7 by idle ones, 1 by httpx)
            sock.settimeout(0.5 if closed >= 8 else 5)
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                if sock.recv(16) == b"":
                    closed += 1
        assert closed == 8
        stream.settimeout(0.2)
        with contextlib.suppress(TimeoutError):  # the stream is still open: no EOF
            assert stream.recv(4096) != b""
    finally:
        for sock in [stream, *idle]:
            sock.close()
        server.stop()


def test_when_every_connection_serves_a_request_a_newcomer_is_refused(rt: Runtime) -> None:
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN, max_connections=2)).start()
    try:
        streams = []
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /api/stream/events HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
            sock.settimeout(5)
            assert b"200 OK" in sock.recv(4096)
            streams.append(sock)
        late = socket.create_connection(("127.0.0.1", server.port))
        late.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert late.recv(16) == b""
        late.close()
        assert server.statistics().connections_refused == 1
        assert server.statistics().connections_evicted == 0
        for sock in streams:
            sock.close()
    finally:
        server.stop()


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_connections must be an integer >= 1"):
        HttpSettings(max_connections=0)


def test_connections_that_never_read_their_answers_cannot_keep_the_operator_out(
        rt: Runtime) -> None:
    # An answer nobody reads keeps its send waiting for the socket to drain,
    # so the connection counted as serving a request for ever: 4 anonymous
    # clients pipelining requests (a static file, or 401s) and never reading
    # held all max_connections places and the operator was refused.
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN, max_connections=4,
                                         head_timeout=0.5)).start()
    try:
        socks = _stuck_clients(server, 4, b"GET /static/console.js HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            # past head_timeout, and until their answers fill every buffer (the
            # kernel's may take a few MiB first: until then they are being
            # served, and a newcomer is rightly refused): not idle, sends stuck
            time.sleep(1.0)
            _until_no_more_answers(server)
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
                assert client.get("/api/scripts").status_code == 200
            assert server.statistics().connections_evicted >= 1
            assert server.statistics().connections_refused == 0
        finally:
            for sock in socks:
                sock.close()
    finally:
        server.stop()
