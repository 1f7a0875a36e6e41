"""JSON answers and errors of the HTTP API, and the headers every answer carries.

Errors are always ``{"error": "<message>"}`` with the status that says what
went wrong (docs/http.md): 400 bad input, 401 no/wrong token, 404 unknown
script or path, 405 wrong method, 409 wrong state, 413 body too large, 429
throttled, 503 no event store or too busy, 500 a bug (logged; the client
gets no traceback). Admin errors carry their kind in their class
(``moonbus.errors``); ``admin_status`` turns that into the status.

Every answer gets ``X-Content-Type-Options: nosniff`` (a JSON error that
echoes a script name is never sniffed as HTML), ``Cache-Control: no-store``
(no shared cache keeps an API answer), ``X-Frame-Options: DENY`` and a strict
``Content-Security-Policy`` (the console's own files only, no inline script,
``frame-ancestors 'none'``: its buttons cannot be clickjacked),
``Referrer-Policy: no-referrer``. No CORS header is ever sent:
another origin's page cannot read an answer.

Threads: pure functions; ``send_error`` runs on the event-loop thread.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Send

from moonbus.errors import (
    AdminError,
    AdminNotFoundError,
    AdminStateError,
    AdminUnavailableError,
)

__all__ = ["SECURITY_HEADERS", "admin_status", "error_response", "json_bytes", "send_error"]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
     b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)


def _finite(value: Any) -> Any:
    """``value`` with NaN and the infinities as the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (a script's ``stats.set("ratio", 0/0)`` must not break the listing)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON that every JSON parser reads: values JSON cannot hold (a Lua
    function in stats) become text, and so do NaN and the infinities (``_finite``)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str,
                          allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the value
        text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"),
                          default=str, allow_nan=False)
    return text.encode("utf-8")


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def json_response(value: Any, status: int = 200) -> JSONResponse:
    """A JSON answer (``json_bytes`` rendering)."""
    return _Json(value, status_code=status)


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return _Json({"error": message}, status_code=status, headers=dict(headers or {}))


def admin_status(exc: AdminError) -> int:
    """The HTTP status of an admin error, by its kind."""
    if isinstance(exc, AdminNotFoundError):
        return 404
    if isinstance(exc, AdminStateError):
        return 409
    if isinstance(exc, AdminUnavailableError):
        return 503
    return 400


async def send_error(send: Send, status: int, message: str, *,
                     headers: Mapping[str, str] | None = None) -> None:
    """Send a whole JSON error answer from raw ASGI (middleware, before any route ran)."""
    body = json_bytes({"error": message})
    raw = [(b"content-type", b"application/json"),
           (b"content-length", str(len(body)).encode("ascii"))]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
