"""The outermost middleware: a cap on requests in flight, security headers, counters.

* **In flight.** At most ``max_inflight`` requests (live streams included)
  are served at once; one more is answered 503 at once and counted
  (``busy``), so a flood of slow requests cannot make the server queue
  without bound.
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

from moonbus.http.responses import SECURITY_HEADERS, send_error
from moonbus.http.settings import HttpCounters

__all__ = ["GuardMiddleware"]

_BY_STATUS = {400: "bad_requests", 404: "not_found", 405: "bad_requests", 409: "conflicts",
              413: "body_too_large", 500: "internal_errors"}
_OURS = frozenset(name for name, _ in SECURITY_HEADERS)


class GuardMiddleware:
    """ASGI middleware around the whole app (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_inflight: int, counters: HttpCounters) -> None:
        self._app = app
        self._max = max_inflight
        self._inflight = 0
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

        if self._inflight >= self._max:
            self._counters.add("busy")
            await send_error(guarded_send, 503, "the server is busy; retry shortly",
                             headers={"retry-after": "1"})
            return
        self._inflight += 1
        try:
            await self._app(scope, receive, guarded_send)
        finally:
            self._inflight -= 1
