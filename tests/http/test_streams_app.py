"""The streams and /metrics inside the composed app (``build_app``, real server):
the token is required, the login counters reach /metrics, and stopping the
server ends open streams."""

from __future__ import annotations

import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.http.helpers import AUTH, TOKEN
from tests.http.streams_support import frames

from moonbus.http.server import HttpServer
from moonbus.http.settings import HttpSettings
from moonbus.http.stream_settings import StreamSettings
from moonbus.runtime import Runtime


def _logins(text: str) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "moonbus_logins_total"}


def test_streams_and_metrics_need_the_token(rt: Runtime) -> None:
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN)).start()
    try:
        for path in ("/api/stream/events", "/api/stream/logs", "/metrics"):
            assert httpx.get(server.url + path, timeout=10).status_code == 401
        text = httpx.get(server.url + "/metrics", headers=AUTH, timeout=10).text
        assert _logins(text) == {"accepted": 1, "refused": 3, "throttled": 0}
    finally:
        server.stop()


def test_a_composed_stream_gets_events_and_ends_when_the_server_stops(rt: Runtime) -> None:
    settings = HttpSettings(port=0, token=TOKEN, streams=StreamSettings(heartbeat=0.5))
    server = HttpServer(rt, settings).start()
    got: list[str] = []
    ended = threading.Event()

    def read() -> None:
        with httpx.Client(timeout=30) as client, \
                client.stream("GET", server.url + "/api/stream/events?type=ping",
                              headers=AUTH) as response:
            for frame in frames(response):
                if frame.event == "event":
                    got.append(frame.json()["type"])
        ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        rt.bus.emit("ping", {})
        rt.bus.emit("other", {})
        time.sleep(0.05)
    assert got and set(got) == {"ping"}
    server.stop()
    assert ended.wait(10), "stopping the server ended the open stream"
    reader.join(10)
