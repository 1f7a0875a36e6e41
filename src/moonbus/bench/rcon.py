"""RCON throughput: admin commands per second over real TCP on 127.0.0.1.

Two rows: one connection sending commands back to back, and 50 connections
doing the same at once (each from its own thread, with ``RconClient``). The
clients run in this process, so they share the interpreter with the server:
the figures are a floor for what external clients would see.

The handler is the real admin registry running ``events`` (a summary query
on a SQLite store with 24 event types); ``handler=`` replaces it in tests.

Threads: ``run`` starts a server (its own loop thread and pool) and client
threads, and stops them all before it returns.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable

from moonbus.admin.rcon_client import RconClient
from moonbus.admin.rcon_server import RconServer
from moonbus.bench.harness import BenchRow
from moonbus.runtime import Runtime

__all__ = ["run"]

_AREA = "admin"
_TARGET_RATE = 2000.0
_PASSWORD = "bench-password"
_COMMAND = "events"


def _admin_runtime(directory: str, events: int) -> Runtime:
    """A runtime whose SQLite store holds ``events`` events of 24 types."""
    rt = Runtime(threaded=False, clock=lambda: 0.0, events=f"sqlite:///{directory}/bench.db")
    for i in range(events):
        rt.bus.emit(f"type_{i % 24:02d}", {"i": i}, tick=i // 24)
    return rt


def run(quick: bool, *, handler: Callable[[str], str] | None = None) -> list[BenchRow]:
    """Measure both rows against the real admin registry (``events`` on a SQLite store
    with 24 event types); ``handler`` replaces it (tests)."""
    with tempfile.TemporaryDirectory() as directory:
        rt = None if handler is not None else _admin_runtime(directory, 2_000 if quick else 20_000)
        try:
            answer = handler if handler is not None else rt.admin.answer  # type: ignore[union-attr]
            return _measure(quick, answer, "admin registry, `events` on a SQLite store"
                            if handler is None else "custom handler")
        finally:
            if rt is not None:
                rt.close()


def _measure(quick: bool, answer_handler: Callable[[str], str], note: str) -> list[BenchRow]:
    expected = answer_handler(_COMMAND)
    server = RconServer(answer_handler, password=_PASSWORD, port=0, max_connections=64)
    with server:
        single = _one_connection(server.port, expected, 300 if quick else 5000)
        many = _concurrent(server.port, expected, 50, 10 if quick else 200)
    return [
        _row("RCON commands/s, one connection", *single, note=note),
        _row("RCON commands/s, 50 concurrent connections", *many, note=note),
    ]


def _row(name: str, rate: float, errors: int, *, note: str) -> BenchRow:
    return BenchRow(
        area=_AREA,
        name=name,
        value=rate,
        unit="commands/s",
        target=f">= {_TARGET_RATE:,.0f} commands/s, no error",
        ok=rate >= _TARGET_RATE and errors == 0,
        note=f"{note}; errors: {errors}",
    )


def _one_connection(port: int, expected: str, commands: int) -> tuple[float, int]:
    errors = 0
    with RconClient("127.0.0.1", port, _PASSWORD) as client:
        for _ in range(min(50, commands)):  # warm up
            client.command(_COMMAND)
        start = time.perf_counter()
        for _ in range(commands):
            if client.command(_COMMAND) != expected:
                errors += 1
        elapsed = time.perf_counter() - start
    return commands / elapsed, errors


def _concurrent(port: int, expected: str, connections: int, each: int) -> tuple[float, int]:
    clients = [RconClient("127.0.0.1", port, _PASSWORD) for _ in range(connections)]
    errors = [0] * connections
    barrier = threading.Barrier(connections + 1)

    def work(index: int) -> None:
        client = clients[index]
        barrier.wait()
        try:
            for _ in range(each):
                if client.command(_COMMAND) != expected:
                    errors[index] += 1
        except Exception:  # counted, not raised: the row reports errors
            errors[index] += 1

    try:
        for client in clients:
            client.connect()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            client.close()
    return connections * each / elapsed, sum(errors)
