"""The real server: uvicorn on a thread (port 0), Runtime.serve_http, the OpenAPI document."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.http.helpers import AUTH, TOKEN

from moonbus.errors import ConfigError
from moonbus.http.app import build_app
from moonbus.http.openapi import OPERATIONS
from moonbus.http.server import HttpServer
from moonbus.http.settings import HttpSettings
from moonbus.runtime import Runtime


def test_a_real_server_on_port_0_answers_and_stops(served: HttpServer) -> None:
    assert served.running and served.port > 0
    assert served.url == f"http://127.0.0.1:{served.port}"
    assert served.console_url == f"{served.url}/#token={TOKEN}"
    with httpx.Client(base_url=served.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/api/scripts").status_code == 401
        rows = c.get("/api/scripts", headers=AUTH).json()["scripts"]
        assert [r["name"] for r in rows] == ["counter", "broken"]
        stopped = c.post("/api/scripts/counter/stop", headers=AUTH)
        assert stopped.json()["status"] == "stopped"
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text
        assert c.get("/static/console.js").status_code == 200
    assert served.statistics().logins == 2
    served.stop()
    assert not served.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/healthz", timeout=2)


def test_x_forwarded_for_does_not_pick_the_throttle_bucket(rt: Runtime) -> None:
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN, auth_burst=2)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            codes = [c.get("/api/scripts", headers={"Authorization": "Bearer wrong-token",
                                                    "X-Forwarded-For": f"10.0.0.{i}"}).status_code
                     for i in range(4)]
        assert codes == [401, 401, 429, 429]
    finally:
        server.stop()


def test_a_port_in_use_is_a_clear_error(rt: Runtime) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(rt, HttpSettings(port=port, token=TOKEN))
        closed: list[int] = []
        server.app.state.parts.on_close.append(lambda: closed.append(1))
        with pytest.raises(ConfigError, match=f"cannot listen for HTTP on 127.0.0.1:{port}"):
            server.start()
        assert closed == [1]  # what a route group attached (a stream hub) is released


def test_runtime_serve_http_generates_a_token_and_stops_with_close(tmp_path: Path) -> None:
    rt = Runtime(threaded=True)
    try:
        server = rt.serve_http(port=0)
        assert len(server.token) >= 32
        r = httpx.get(f"{server.url}/api/settings", timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"})
        assert r.status_code == 200
        assert server.running
    finally:
        started = time.monotonic()
        rt.close()
    assert not server.running
    assert time.monotonic() - started < 15
    with pytest.raises(ConfigError, match="closed"):
        rt.serve_http(port=0)


def test_serve_http_rejects_bad_settings(rt: Runtime) -> None:
    with pytest.raises(ConfigError, match=r"port must be 0\.\.65535"):
        rt.serve_http(port=70000)
    with pytest.raises(ConfigError, match="max_body_bytes must be an integer >= 1"):
        rt.serve_http(port=0, max_body_bytes=0)
    with pytest.raises(TypeError):
        rt.serve_http(port=0, no_such_limit=3)


def test_openapi_describes_every_route(rt: Runtime) -> None:
    from tests.http.helpers import make_call

    app = build_app(rt, HttpSettings(token=TOKEN))
    doc = make_call(app)("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    served = set()
    for route in app.routes:
        methods = getattr(route, "methods", None) or {"GET"}
        path = route.path if hasattr(route, "endpoint") else route.path + "/{path}"  # Mount
        for method in methods - {"HEAD"}:
            served.add((method.lower(), path))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    undescribed = [(m, p) for p, ops in doc["paths"].items() for m, op in ops.items()
                   if op.get("x-undocumented")]
    assert undescribed == []
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # the contract's stream and metrics paths are described for when they are composed
    for key in (("get", "/api/stream/events"), ("get", "/api/stream/logs"), ("get", "/metrics")):
        assert key in OPERATIONS


def test_import_moonbus_does_not_import_the_http_stack() -> None:
    code = ("import sys, moonbus; rt = moonbus.Runtime(threaded=False); rt.close(); "
            "bad = [m for m in ('starlette', 'uvicorn', 'sse_starlette', 'prometheus_client', "
            "'httpx', 'moonbus.http') if m in sys.modules]; print(bad); assert not bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_extra_is_a_clear_import_error() -> None:
    code = ("import sys; sys.modules['starlette'] = None\n"
            "import moonbus\n"
            "try:\n    moonbus.Runtime(threaded=False).serve_http(port=0)\n"
            "except ImportError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert "pip install 'moonbus[http]'" in result.stdout, result.stdout + result.stderr


def test_route_groups_compose_and_their_closers_end_open_streams_at_stop(rt: Runtime) -> None:
    import asyncio
    import threading

    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from moonbus.http.app import ROUTE_GROUPS, AppParts

    closed: list[str] = []

    def streams(rt: Runtime, settings: HttpSettings, parts: AppParts) -> list[Route]:
        ended = asyncio.Event()

        def close() -> None:
            closed.append("streams")
            ended.set()

        parts.on_close.append(close)

        async def stream(request):  # type: ignore[no-untyped-def]
            async def body():  # type: ignore[no-untyped-def]
                yield b"hello\n"
                await ended.wait()
                yield b"bye\n"

            return StreamingResponse(body(), media_type="text/plain")

        return [Route("/api/stream/test", stream, methods=["GET"])]

    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN))
    server.app = build_app(rt, server.settings, (*ROUTE_GROUPS, streams))
    server.start()
    got: list[bytes] = []

    def read() -> None:
        with httpx.stream("GET", f"{server.url}/api/stream/test", headers=AUTH,
                          timeout=30) as r:
            got.extend(r.iter_lines())  # type: ignore[arg-type]

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not server.statistics().logins and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    server.stop()
    reader.join(30)
    assert closed == ["streams"]
    assert got == ["hello", "bye"]  # the stream ended by its closer, not cut by the timeout
    # a composed route nobody described is listed, and flagged for the test above
    from tests.http.helpers import make_call

    doc = make_call(build_app(rt, server.settings, (*ROUTE_GROUPS, streams)))(
        "GET", "/openapi.json").json()
    assert doc["paths"]["/api/stream/test"]["get"]["x-undocumented"] is True


def test_answers_are_not_held_back_by_nagle(served: HttpServer) -> None:
    """Accepted connections get TCP_NODELAY (asyncio sets it only on sockets that say
    they are TCP); without it every answer waited ~40 ms for a delayed ACK."""
    with httpx.Client(base_url=served.url, timeout=10) as c:  # keep-alive: stays open
        assert c.get("/healthz").status_code == 200
        connections = served._server.server_state.connections  # type: ignore[union-attr]
        assert connections
        for protocol in connections:
            sock = protocol.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
