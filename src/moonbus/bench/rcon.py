"""RCON throughput: admin commands per second over real TCP on 127.0.0.1.

Two rows: one connection sending commands back to back, and 50 connections
doing the same at once (each from its own thread, with ``RconClient``). The
clients run in this process, so they share the interpreter with the server:
the figures are a floor for what external clients would see.

Until the admin command registry is wired, the handler is a stand-in doing
work of the size of the ``events`` command (format one line per event type
from a dict of counts); pass ``handler=`` to measure the real one.

Threads: ``run`` starts a server (its own loop thread and pool) and client
threads, and stops them all before it returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from moonbus.admin.rcon_client import RconClient
from moonbus.admin.rcon_server import RconServer
from moonbus.bench.harness import BenchRow

__all__ = ["EventsSummaryStandIn", "run"]

_AREA = "admin"
_TARGET_RATE = 2000.0
_PASSWORD = "bench-password"
_COMMAND = "events"


class EventsSummaryStandIn:
    """Answers like ``events``: ``- <type>: <count>`` per stored type, sorted."""

    def __init__(self, types: int = 24) -> None:
        self._counts = {f"type_{n:02d}.{kind}": 37 * n + 5 for n in range(types) for kind in "ab"}

    def __call__(self, command: str) -> str:
        if not self._counts:
            return "no events are stored"
        return "\n".join(f"- {name}: {count}" for name, count in sorted(self._counts.items()))


def run(quick: bool, *, handler: Callable[[str], str] | None = None) -> list[BenchRow]:
    """Measure both rows; ``quick`` shrinks the workload to well under a second."""
    answer_handler = handler if handler is not None else EventsSummaryStandIn()
    expected = answer_handler(_COMMAND)
    note = (
        "stand-in handler (events-style summary) until the admin registry is wired"
        if handler is None
        else "admin handler"
    )
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
