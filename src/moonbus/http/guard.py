"""The outermost middleware (security headers, counters) and the cap on
requests in flight, which sits *inside* the auth middleware.

* **In flight** (``InflightCap``). At most ``max_inflight`` requests that
  carried the right token (live streams included) are served at once; one
  more is answered 503 at once and counted (``busy``), so a flood of slow
  requests cannot make the server queue without bound. Requests without the
  token (the console's files, 401s, 429s) are not counted: an answer nobody
  reads stalls its send, and anonymous clients that pipeline requests and
  never read must not take the operator's slots (tests/http/test_http_hostile.py).
* **Headers.** Every answer, also the ones the auth middleware or Starlette
  produce, gets ``SECURITY_HEADERS`` (``moonbus.http.responses``), and never a
  CORS header.
* **Counters.** ``requests`` and the error statuses nobody else counts (400,
  404, 405, 409, 413, 500) are counted from the status the app answered.

Threads: runs on the server's event-loop thread only (so the in-flight count
needs no lock); the counters are thread-safe anyway.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moonbus.http.auth import is_open_path
from moonbus.http.responses import SECURITY_HEADERS, send_error
from moonbus.http.settings import HttpCounters

__all__ = ["GuardMiddleware", "InflightCap"]

_BY_STATUS = {400: "bad_requests", 404: "not_found", 405: "bad_requests", 409: "conflicts",
              413: "body_too_large", 500: "internal_errors"}
_OURS = frozenset(name for name, _ in SECURITY_HEADERS)


class GuardMiddleware:
    """ASGI middleware around the whole app: headers and counters (module docstring)."""

    def __init__(self, app: ASGIApp, *, counters: HttpCounters) -> None:
        self._app = app
        self._counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        self._counters.add("requests")

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                counter = _BY_STATUS.get(status)
                if counter is not None:
                    self._counters.add(counter)
                headers = [(k, v) for k, v in message.get("headers", []) if k not in _OURS]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        await self._app(scope, receive, guarded_send)


class InflightCap:
    """ASGI middleware inside the auth middleware: at most ``max_inflight``
    requests served at once, one more is 503 (module docstring)."""

    def __init__(self, app: ASGIApp, *, max_inflight: int, counters: HttpCounters) -> None:
        self._app = app
        self._max = max_inflight
        self._inflight = 0
        self._counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["method"], scope["path"]):
            await self._app(scope, receive, send)  # no token was needed: not counted
            return
        if self._inflight >= self._max:
            self._counters.add("busy")
            await send_error(send, 503, "the server is busy; retry shortly",
                             headers={"retry-after": "1"})
            return
        self._inflight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._inflight -= 1
