"""Bearer-token auth with per-address throttling of wrong tokens (SPEC §11).

Every request needs ``Authorization: Bearer <token>`` but ``GET /healthz``,
the console page ``GET /`` and its files under ``/static/`` (they hold no
data; the page asks for the token and sends it with every call). Mutating
calls need it too on 127.0.0.1: there is no "local means trusted".

Why this shape:

* **Constant time.** The token is compared with ``hmac.compare_digest`` over
  bytes, so the answer time does not say how much of a guess was right.
* **Throttled like RCON logins** (``moonbus.admin.rcon_throttle``): each wrong
  token serves a doubling penalty (``auth_base_delay`` ... ``auth_max_delay``)
  that counts against its *address*. The wrong answer is sent at once (no
  connection is held open for the penalty), but while an address has
  ``auth_burst`` penalties running, every request of that address that
  carries a token is answered 429 with ``Retry-After``, right token or not:
  answering a right token there would tell a guesser which guess was right,
  and the throttle would cap nothing. So a guesser gets at most
  ``auth_burst`` answers per ``auth_max_delay`` seconds. Other addresses are
  never delayed nor refused: nothing here sleeps, and the records are per
  address. A success does *not* wipe its address's record: on a shared
  address (127.0.0.1 for every local process) the operator's console would
  otherwise reset a local guesser's penalties every second.
* **The address is the TCP peer**, never ``X-Forwarded-For`` (the server
  runs uvicorn with ``proxy_headers=False``): a header any client can set
  must not pick the bucket its failures are counted in. An IPv6 peer counts
  by its ``/auth_ipv6_prefix`` network (``/64`` by default: one end user's
  share), else a guesser would own 2^64 buckets; an IPv4-mapped IPv6 peer
  counts as its IPv4 address (``throttle_key``).
* A request without a token is not a guess: it gets 401 and counts nothing
  against the address (a browser opening an API link without the console).
* The token is never logged, never echoed, and never read from the URL
  (query strings end up in access logs and browser history; the console's
  ``#token=`` fragment never reaches the server).

Threads: the middleware runs on the server's event-loop thread, the only
one that touches the ``LoginThrottle`` (which is not thread-safe).
"""

from __future__ import annotations

import hmac
import math

from starlette.types import ASGIApp, Receive, Scope, Send

from moonbus.admin.rcon_throttle import LoginThrottle, throttle_key
from moonbus.http.responses import send_error
from moonbus.http.settings import HttpCounters, HttpSettings

__all__ = ["OPEN_PATHS", "AuthMiddleware", "is_open_path", "make_throttle", "throttle_key"]

OPEN_PATHS = frozenset({"/", "/healthz"})  # GET without a token (nothing secret)
_STATIC_PREFIX = "/static/"


def is_open_path(method: str, path: str) -> bool:
    """Whether ``method path`` is served without a token."""
    return method in ("GET", "HEAD") and (path in OPEN_PATHS or path.startswith(_STATIC_PREFIX))


def make_throttle(settings: HttpSettings) -> LoginThrottle:
    """The per-address throttle for wrong tokens, from ``settings``."""
    return LoginThrottle(base_delay=settings.auth_base_delay, max_delay=settings.auth_max_delay,
                         burst=settings.auth_burst, forget_after=settings.auth_forget_after,
                         max_tracked=settings.auth_max_tracked)


def _bearer(scope: Scope) -> bytes | None:
    """The token of the ``Authorization: Bearer`` header, or None when there is none."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return b""  # some other scheme: a wrong token, not a missing one
            return bytes(token.strip())
    return None


class AuthMiddleware:
    """ASGI middleware: let open paths through, check the token on every other request."""

    def __init__(self, app: ASGIApp, *, token: str, counters: HttpCounters,
                 throttle: LoginThrottle, ipv6_prefix: int = 64) -> None:
        self._app = app
        self._ipv6_prefix = ipv6_prefix
        self._token = token.encode("ascii")
        self._counters = counters
        self._throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["method"], scope["path"]):
            await self._app(scope, receive, send)
            return
        given = _bearer(scope)
        if given is None:
            self._counters.logins.refused()
            await send_error(send, 401, "a token is required: Authorization: Bearer <token>",
                             headers={"www-authenticate": "Bearer"})
            return
        client = scope.get("client")
        address = throttle_key(str(client[0]), self._ipv6_prefix) if client else "unknown"
        wait = self._throttle.wait_before_check(address)
        if wait > 0:
            self._counters.logins.throttled()
            seconds = max(1, math.ceil(wait))
            await send_error(send, 429, f"too many wrong tokens from your address; "
                             f"retry in {seconds} s", headers={"retry-after": str(seconds)})
            return
        if not hmac.compare_digest(given, self._token):
            self._throttle.record_failure(address)
            self._counters.add("auth_failures")
            self._counters.logins.refused()
            await send_error(send, 401, "wrong token", headers={"www-authenticate": "Bearer"})
            return
        self._counters.logins.accepted()
        await self._app(scope, receive, send)
