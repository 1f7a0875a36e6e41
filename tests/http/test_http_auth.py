"""The token, its throttle per address, and what an attacker can send (SPEC §11)."""

from __future__ import annotations

import time

import pytest
from tests.http.helpers import TOKEN, Call, make_call

from moonbus.admin.rcon_throttle import LoginThrottle
from moonbus.errors import ConfigError
from moonbus.http.app import build_app
from moonbus.http.auth import AuthMiddleware
from moonbus.http.settings import HttpSettings
from moonbus.runtime import Runtime

PROTECTED = [("GET", "/api/scripts"), ("POST", "/api/scripts/counter/stop"),
             ("GET", "/api/scripts/counter/shared"), ("GET", "/api/events"),
             ("DELETE", "/api/events"), ("GET", "/api/settings"),
             ("PUT", "/api/settings/poll_delay_ms"), ("GET", "/openapi.json"),
             ("GET", "/no/such/path")]


def test_every_api_path_needs_the_token(rt: Runtime, call: Call) -> None:
    for method, path in PROTECTED:
        missing = call(method, path, token=None)
        assert missing.status_code == 401, path
        assert missing.json() == {"error": "a token is required: Authorization: Bearer <token>"}
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = call(method, path, token="not-the-token", addr=f"10.1.0.{len(path)}")
        assert wrong.status_code == 401, path
        assert wrong.json() == {"error": "wrong token"}
    assert rt.script("counter").status == "running"  # the stop never ran


def test_other_schemes_and_empty_tokens_are_wrong(call: Call) -> None:
    for header in (f"Basic {TOKEN}", "Bearer", "Bearer ", f"bearer{TOKEN}", TOKEN):
        r = call("GET", "/api/scripts", token=None, headers={"Authorization": header},
                 addr=f"10.2.0.{len(header)}")
        assert r.status_code == 401, header
    ok = call("GET", "/api/scripts", token=None, headers={"Authorization": f"bearer {TOKEN}"})
    assert ok.status_code == 200  # the scheme is case-insensitive (RFC 7235)


def test_wrong_tokens_are_throttled_per_address_and_never_delay_others(app) -> None:  # type: ignore[no-untyped-def]
    call = make_call(app)
    burst = HttpSettings().auth_burst
    for _ in range(burst):
        assert call("GET", "/api/scripts", token="guess", addr="10.9.9.9").status_code == 401
    # the guesser's address now has `burst` penalties running: every answer is 429,
    # even for the right token (else the answer would tell which guess was right)
    throttled = call("GET", "/api/scripts", token="guess-5", addr="10.9.9.9")
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert "too many wrong tokens" in throttled.json()["error"]
    assert call("GET", "/api/scripts", addr="10.9.9.9").status_code == 429
    # another address is neither refused nor slowed down
    started = time.monotonic()
    assert call("GET", "/api/scripts", addr="10.8.8.8").status_code == 200
    assert call("GET", "/api/scripts", token="typo", addr="10.8.8.8").status_code == 401
    assert time.monotonic() - started < 5.0  # nothing here waits for a penalty
    # open paths stay open for the throttled address
    assert call("GET", "/healthz", token=None, addr="10.9.9.9").status_code == 200
    stats = app.state.http_counters.snapshot()
    assert stats.auth_failures == burst + 1
    assert stats.throttled == 2
    assert stats.logins == 1


def test_the_throttle_lifts_when_the_penalties_end(rt: Runtime) -> None:
    now = [1000.0]
    throttle = LoginThrottle(base_delay=1.0, max_delay=4.0, burst=2, clock=lambda: now[0])
    inner = build_app(rt, HttpSettings(token=TOKEN))
    app = AuthMiddleware(inner, token=TOKEN, counters=inner.state.http_counters,
                         throttle=throttle)
    call = make_call(app)
    assert call("GET", "/api/scripts", token="bad1", addr="10.3.0.1").status_code == 401
    assert call("GET", "/api/scripts", token="bad2", addr="10.3.0.1").status_code == 401
    assert call("GET", "/api/scripts", addr="10.3.0.1").status_code == 429
    now[0] += 1.01  # the first penalty (1 s) ended; the second (2 s) still runs
    assert call("GET", "/api/scripts", addr="10.3.0.1").status_code == 200


def test_the_token_is_never_echoed_nor_logged(call: Call, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    secret_guess = "guess-that-must-not-echo"
    r = call("GET", "/api/scripts", token=secret_guess, addr="10.4.0.1")
    assert secret_guess not in r.text and TOKEN not in r.text
    ok = call("GET", "/api/scripts")
    assert TOKEN not in ok.text
    assert TOKEN not in caplog.text and secret_guess not in caplog.text


def test_bad_tokens_are_refused_at_start(rt: Runtime) -> None:
    for token, message in (("short", "8 to 512"), ("has space in it", "printable ASCII"),
                           ("x" * 513, "8 to 512"), ("tökenökenöken", "printable ASCII")):
        with pytest.raises(ConfigError, match=message) as info:
            HttpSettings(token=token)
        assert token not in str(info.value)
    generated = HttpSettings().with_token()
    assert generated.token is not None and len(generated.token) >= 32
    assert HttpSettings().with_token().token != generated.token


def test_no_cors_headers_even_when_asked(call: Call) -> None:
    r = call("GET", "/api/scripts", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200
    assert not any(k.lower().startswith("access-control-") for k in r.headers)
    pre = call("OPTIONS", "/api/scripts", token=None, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 401  # no preflight answer: a browser refuses the call
    assert not any(k.lower().startswith("access-control-") for k in pre.headers)


def test_security_headers_on_every_answer(call: Call) -> None:
    for method, path, token in (("GET", "/api/scripts", TOKEN), ("GET", "/healthz", None),
                                ("GET", "/api/scripts", None), ("GET", "/nope", TOKEN)):
        r = call(method, path, token=token)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert "server" not in r.headers


def test_oversized_bodies_are_413_before_and_while_reading(rt: Runtime) -> None:
    app = build_app(rt, HttpSettings(token=TOKEN, max_body_bytes=100))
    call = make_call(app)
    big = b'{"value": "' + b"x" * 200 + b'"}'
    r = call("PUT", "/api/settings/poll_delay_ms", content=big)
    assert r.status_code == 413
    assert "over the limit of 100 bytes" in r.json()["error"]

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 50  # no Content-Length: chunked, counted while it arrives

    r = call("PUT", "/api/settings/poll_delay_ms", content=chunks())
    assert r.status_code == 413
    lying = call("PUT", "/api/settings/poll_delay_ms", content=b'{"value": 5}',
                 headers={"Content-Length": "abc"})
    assert lying.status_code == 400
    assert app.state.http_counters.snapshot().body_too_large == 2
    assert rt.settings.poll_delay != 0.005


def test_unknown_paths_and_methods_are_json_errors(call: Call) -> None:
    r = call("GET", "/api/nothing")
    assert r.status_code == 404 and r.json() == {"error": "no such path: /api/nothing"}
    r = call("DELETE", "/api/scripts")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    assert "GET" in r.headers["allow"]


def test_path_traversal_finds_nothing(call: Call) -> None:
    for path in ("/static/../settings.py", "/static/%2e%2e/settings.py",
                 "/static/..%2fsettings.py", "/static/%2e%2e/%2e%2e/runtime.py",
                 "/api/scripts/..%2f..%2fsettings/shared"):
        r = call("GET", path, token=None)
        assert r.status_code in (401, 404), path
        assert "import" not in r.text, path  # no source file was served


def test_too_many_requests_in_flight_are_503(rt: Runtime) -> None:
    from moonbus.http.guard import InflightCap
    from moonbus.http.settings import HttpCounters

    counters = HttpCounters()

    async def slow(scope, receive, send):  # type: ignore[no-untyped-def]
        import asyncio

        await asyncio.sleep(0.2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = InflightCap(slow, max_inflight=2, counters=counters)

    async def many() -> list[int]:
        import asyncio

        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://moonbus") as c:
            answers = await asyncio.gather(*(c.get("/api/scripts") for _ in range(5)))
        return sorted(r.status_code for r in answers)

    import asyncio

    assert asyncio.run(many()) == [200, 200, 503, 503, 503]
    assert counters.snapshot().busy == 3
