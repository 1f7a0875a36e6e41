"""What an attacker can send a real server: raw request lines, traversal, injection,
huge heads, and the token compare."""

from __future__ import annotations

import socket

import httpx
import pytest
from tests.http.helpers import AUTH, TOKEN, Call

from moonbus.http.server import HttpServer
from moonbus.runtime import Runtime


def _raw(server: HttpServer, request: bytes) -> bytes:
    """Send ``request`` as bytes (no client normalises the path) and read the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def test_raw_traversal_paths_serve_no_file(served: HttpServer) -> None:
    for path in ("/static/../settings.py", "/static/..%2fsettings.py",
                 "/static/%2e%2e/%2e%2e/runtime.py", "/static//etc/passwd",
                 "/static/../../../../etc/passwd", "/../../etc/passwd"):
        answer = _raw(served, _get(path))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"401", b"404"), (path, head)
        assert b"import" not in body and b"root:" not in body, path


def test_crlf_in_a_name_injects_no_header(served: HttpServer) -> None:
    answer = _raw(served, _get("/api/scripts/x%0d%0aSet-Cookie:%20a=b/shared",
                               f"Authorization: Bearer {TOKEN}"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404")
    assert b"set-cookie" not in head.lower()
    assert b"no script named" in body


def test_a_huge_request_head_is_refused_and_the_server_keeps_serving(
        served: HttpServer) -> None:
    answer = _raw(served, _get("/healthz", "X-Big: " + "a" * 200_000))
    assert not answer.startswith(b"HTTP/1.1 200")
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


def test_mutating_calls_need_the_token_on_localhost_too(rt: Runtime,
                                                        served: HttpServer) -> None:
    for method, path in (("POST", "/api/scripts/counter/stop"),
                         ("PUT", "/api/settings/poll_delay_ms"), ("DELETE", "/api/events")):
        r = httpx.request(method, served.url + path, json={"value": 1}, timeout=10)
        assert r.status_code == 401, path
    assert rt.script("counter").status == "running"
    assert httpx.get(served.url + "/api/scripts", headers=AUTH, timeout=10).status_code == 200


def test_the_token_is_compared_in_constant_time(call: Call,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr("moonbus.http.auth.hmac.compare_digest", spy)
    assert call("GET", "/api/scripts", token="abc", addr="10.7.0.1").status_code == 401
    assert call("GET", "/api/scripts").status_code == 200
    assert seen == [(b"abc", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]
