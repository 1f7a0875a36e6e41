"""Fixtures of the HTTP API tests: a runtime with two scripts, the app over it
(called in-process, ``call``), and a real uvicorn server thread on port 0
(``served``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from tests.http.helpers import BROKEN, COUNTER, TOKEN, Call, make_call

from moonbus.http.app import build_app
from moonbus.http.server import HttpServer
from moonbus.http.settings import HttpSettings
from moonbus.runtime import Runtime


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
