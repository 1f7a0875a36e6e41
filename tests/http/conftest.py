"""Fixtures of the HTTP API tests: a runtime with scripts, and two ways to call the app.

``call`` drives the ASGI app in-process through httpx's ASGI transport, from
any client address (``addr=``), so per-address throttling can be tested
without sockets; ``served`` is a real uvicorn server thread on port 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from moonbus.http import HttpServer, HttpSettings, build_app  # noqa: E402
from moonbus.runtime import Runtime  # noqa: E402

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

Call = Callable[..., "httpx.Response"]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(threaded=False, clock=lambda: 0.0,
                      events=f"sqlite:///{tmp_path / 'events.db'}")
    for name, text in (("counter", COUNTER), ("broken", BROKEN)):
        path = tmp_path / f"{name}.lua"
        path.write_text(text)
        runtime.load(path).start()
    runtime.run_due()
    try:
        yield runtime
    finally:
        runtime.close()


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


@pytest.fixture
def app(rt: Runtime) -> Any:
    return build_app(rt, HttpSettings(token=TOKEN))


@pytest.fixture
def call(app: Any) -> Call:
    return make_call(app)


@pytest.fixture
def served(rt: Runtime) -> Iterator[HttpServer]:
    server = HttpServer(rt, HttpSettings(port=0, token=TOKEN)).start()
    try:
        yield server
    finally:
        server.stop()
