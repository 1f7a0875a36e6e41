"""Helpers of the HTTP API tests: the token, scripts, and an in-process client.

``make_call`` drives the ASGI app through httpx's ASGI transport, from any
client address (``addr=``), so per-address throttling can be tested without
sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

COUNTER = """
events:on("ping", function(e)
  shared:int("pings"):increment()
  stats.set("pings", shared:int("pings"):get())
end)
function poll() return 50 end
"""
BROKEN = """
events:on("boom", function(e) error("kaboom " .. e.n) end)
"""

Call = Callable[..., httpx.Response]


def make_call(app: Any) -> Call:
    """``call(method, path, addr="10.0.0.1", token=TOKEN, **httpx_kwargs)`` -> Response."""

    def call(method: str, path: str, *, addr: str = "10.0.0.1", token: str | None = TOKEN,
             **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=(addr, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://moonbus") as c:
                return await c.request(method, path, headers=headers, **kwargs)

        return asyncio.run(go())

    return call
