"""Test helpers for the live streams: a real uvicorn server in a thread, and an
SSE reader (httpx) that parses frames. Shared by test_streams*.py and test_metrics*.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route


@contextmanager
def serve(routes: list[Route], on_shutdown: Callable[[], None] | None = None) -> Iterator[str]:
    """Run a Starlette app of ``routes`` on 127.0.0.1 (a free port) in a thread;
    yields its base URL; stops the server at exit (``on_shutdown`` runs on its loop)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Frame:
    """One SSE message: its fields (``event``, ``id``, ``data``) or a comment."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


def frames(response: httpx.Response) -> Iterator[Frame]:
    """Parse the SSE frames of a streaming response, as they arrive."""
    frame = Frame()
    started = False
    for line in response.iter_lines():
        if line == "":
            if started:
                yield frame
            frame, started = Frame(), False
            continue
        started = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            frame.comments.append(value)
        elif name == "data":
            frame.data = value if frame.data is None else frame.data + "\n" + value
        elif name in ("event", "id"):
            setattr(frame, name, value)


def when_joined(hub: Any, action: Callable[[], object], clients: int = 1) -> threading.Thread:
    """Run ``action`` on a thread once ``hub`` (a ``FanOut``) has accepted
    ``clients`` more streams than now: the stream is attached, nothing is missed."""
    wanted = hub.statistics().clients_accepted + clients

    def wait_then_act() -> None:
        deadline = time.monotonic() + 30
        while hub.statistics().clients_accepted < wanted and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread
