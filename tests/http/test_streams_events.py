"""The live event stream over a real uvicorn server: resume with Last-Event-ID
(no event lost, none twice), the type filter, bad input, gaps, max clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.http.streams_support import Frame, frames, serve, when_joined

from moonbus import Runtime
from moonbus.http.stream_settings import StreamSettings
from moonbus.http.streams import StreamRoutes

pytest.importorskip("sse_starlette")


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime(threaded=False)
    yield runtime
    runtime.close()


def _emit_in_thread(rt: Runtime, count: int, *, pause_every: int = 500) -> threading.Thread:
    def run() -> None:
        for i in range(count):
            rt.bus.emit("player:moved" if i % 3 else "tick_like", {"i": i})
            if i % pause_every == pause_every - 1:
                time.sleep(0.01)  # let the reader be somewhere in the middle

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _read_until(url: str, *, stop_after: int, headers: dict[str, str] | None = None,
                stop_seq: int | None = None) -> list[Frame]:
    got: list[Frame] = []
    with httpx.Client(timeout=30) as client, \
            client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for frame in frames(response):
            if frame.event is None:
                continue  # a heartbeat
            got.append(frame)
            if len(got) >= stop_after or (stop_seq is not None and frame.id == str(stop_seq)):
                break
    return got


def _resume_run(rt: Runtime, total: int) -> list[int]:
    streams = StreamRoutes(rt)
    with serve(streams.routes, streams.close) as base:
        url = base + "/api/stream/events"
        rt.bus.emit("before", {})  # seq 1, before any client: the resume must start after it
        emitter = None
        first: list[Frame] = []

        def start() -> None:
            nonlocal emitter
            emitter = _emit_in_thread(rt, total)

        when_joined(streams.events, start)
        first = _read_until(url, stop_after=total // 2)
        assert first[0].id == "2", "a fresh stream starts with the events after it opened"
        last_id = first[-1].id
        assert last_id is not None
        time.sleep(0.05)  # events go on while the client is away
        rest = _read_until(url, stop_after=10**9, headers={"Last-Event-ID": last_id},
                           stop_seq=total + 1)
        assert emitter is not None
        emitter.join()
    seqs = [int(f.id or 0) for f in first + rest]
    assert all(f.event == "event" and f.json()["seq"] == int(f.id or 0) for f in first + rest)
    return seqs


def test_resume_with_last_event_id_loses_no_event_of_10000(rt: Runtime) -> None:
    seqs = _resume_run(rt, 10_000)
    assert seqs == list(range(2, 10_002)), "no gap and no duplicate around the reconnect"


def test_resume_reads_older_events_from_the_durable_store(tmp_path: Path) -> None:
    # An in-memory log of 100 events: the resume has to read the store for the rest.
    with Runtime(threaded=False, log_size=100, events=f"sqlite:///{tmp_path / 'ev.db'}") as rt:
        streams = StreamRoutes(rt, StreamSettings(backlog_page=70))
        for i in range(1_000):
            rt.bus.emit("player:moved" if i % 2 else "other", {"i": i})
        with serve(streams.routes, streams.close) as base:
            got = _read_until(base + "/api/stream/events", stop_after=10**9, stop_seq=1_000,
                              headers={"Last-Event-ID": "10"})
            assert [int(f.id or 0) for f in got] == list(range(11, 1_001))
            only = _read_until(base + "/api/stream/events?type=player:*&after_seq=900",
                               stop_after=50)
            assert [int(f.id or 0) for f in only] == list(range(902, 1_001, 2))


def test_type_filter_takes_bus_wildcards(rt: Runtime) -> None:
    streams = StreamRoutes(rt)
    with serve(streams.routes, streams.close) as base:
        for i in range(30):
            rt.bus.emit(("player:joined", "player:left", "chat")[i % 3], {"i": i})
        exact = _read_until(base + "/api/stream/events?type=chat&after_seq=0", stop_after=10)
        assert {f.json()["type"] for f in exact} == {"chat"}
        assert [f.json()["data"]["i"] for f in exact] == list(range(2, 30, 3))
        prefix = _read_until(base + "/api/stream/events?type=player:*&after_seq=0",
                             stop_after=20)
        assert {f.json()["type"] for f in prefix} == {"player:joined", "player:left"}
        assert len(prefix) == 20


def test_live_events_are_filtered_too(rt: Runtime) -> None:
    streams = StreamRoutes(rt)
    with serve(streams.routes, streams.close) as base:
        when_joined(streams.events, lambda: [rt.bus.emit(t, {}) for t in ("a", "b", "a", "b")])
        got = _read_until(base + "/api/stream/events?type=b", stop_after=2)
    assert [f.json()["type"] for f in got] == ["b", "b"]
    assert [f.id for f in got] == ["2", "4"]


@pytest.mark.parametrize(("query", "headers", "message"), [
    ("?type=pla*yer", {}, "bad type pattern"),
    ("?type=a%20b", {}, "bad type pattern"),
    ("", {"Last-Event-ID": "abc"}, "must be a seq number"),
    ("?after_seq=-3", {}, "must be >= 0"),
])
def test_bad_input_is_a_400_with_a_json_error(
    rt: Runtime, query: str, headers: dict[str, str], message: str
) -> None:
    streams = StreamRoutes(rt)
    with serve(streams.routes, streams.close) as base:
        response = httpx.get(base + "/api/stream/events" + query, headers=headers, timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_resume_older_than_the_log_without_a_store_says_gap() -> None:
    with Runtime(threaded=False, log_size=10) as rt:
        streams = StreamRoutes(rt)
        for i in range(50):
            rt.bus.emit("e", {"i": i})
        with serve(streams.routes, streams.close) as base:
            got = _read_until(base + "/api/stream/events?after_seq=5", stop_after=11)
    assert got[0].event == "gap"
    assert got[0].json()["after_seq"] == 5 and got[0].json()["first_seq"] == 41
    assert [int(f.id or 0) for f in got[1:]] == list(range(41, 51))


def test_one_client_over_max_clients_is_refused_with_503(rt: Runtime) -> None:
    streams = StreamRoutes(rt, StreamSettings(max_clients=1))
    with serve(streams.routes, streams.close) as base, httpx.Client(timeout=10) as client, \
            client.stream("GET", base + "/api/stream/events") as first:
        assert first.status_code == 200
        deadline = time.monotonic() + 5
        while streams.events.statistics().clients < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = client.get(base + "/api/stream/events")
        assert second.status_code == 503
        assert "too many event streams" in second.json()["error"]
    assert streams.events.statistics().clients_refused == 1


def test_the_bus_subscription_lives_only_while_a_client_is_connected(rt: Runtime) -> None:
    streams = StreamRoutes(rt)

    def owners() -> list[str | None]:
        return [s.owner for s in rt.bus.subscriptions() if s.owner == "http:stream"]

    assert owners() == []
    with serve(streams.routes, streams.close) as base:
        when_joined(streams.events, lambda: rt.bus.emit("x", {}))
        _read_until(base + "/api/stream/events", stop_after=1)
        deadline = time.monotonic() + 5
        while owners() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert owners() == [], "the last client left: the bus handler is gone"
        assert streams.events.statistics().clients == 0


def test_an_id_past_the_newest_event_says_gap_and_goes_on_live(rt: Runtime) -> None:
    streams = StreamRoutes(rt)
    for _ in range(3):
        rt.bus.emit("e", {})
    with serve(streams.routes, streams.close) as base:
        when_joined(streams.events, lambda: rt.bus.emit("e", {}))
        got = _read_until(base + "/api/stream/events", headers={"Last-Event-ID": "500"},
                          stop_after=2)
    assert got[0].event == "gap" and "reset" in got[0].json()["reason"]
    assert got[0].json()["first_seq"] == 4
    assert got[1].id == "4"
