"""Live event streams (SSE): delivery rate, emit cost with clients, receipt latency.

Rows (all in one process: a uvicorn server thread serving ``StreamRoutes``,
the emitting thread, and httpx reader threads sharing one interpreter, so the
figures are a floor for what external clients would see):

* events/s delivered to 1 and to 50 SSE clients: events emitted back to back,
  timed from the first emit until every client has read the last event.
* emit cost with 50 clients attached against none, side by side (best of
  alternating rounds): the CPU time of the emitting thread per emit
  (``time.thread_time``), which is what the hub adds to the emit path (one
  ``deque.append``); target at most 10 % more. The wall-clock ratio, which
  also counts the server and reader threads taking the GIL, is in the note.
* p99 event -> client receipt latency at 1,000 events/s: each event carries
  its emit time; a reader thread (httpx, Python) notes when its frame
  arrived. This is client-side receipt in Python; the browser-side figure is
  the console's (its Chromium tests).

Threads: ``run`` starts the server, the readers and the emitter, and stops
them all before it returns.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moonbus.bench.harness import BenchRow, missing_peer, skipped_row
from moonbus.runtime import Runtime

__all__ = ["run"]

_AREA = "http"
_CLIENTS = 50
_MAX_EMIT_COST = 1.10


@contextmanager
def _serving(routes: list[Any]) -> Iterator[str]:
    """A uvicorn server for ``routes`` on 127.0.0.1 in a thread; yields its URL."""
    import uvicorn
    from starlette.applications import Starlette

    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="bench-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the bench server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class _Reader(threading.Thread):
    """One SSE client: reads ``/api/stream/events`` until it saw seq ``last``."""

    def __init__(self, url: str, on_frame: Callable[[bytes], None] | None = None) -> None:
        super().__init__(name="bench-sse-reader", daemon=True)
        self.url, self.on_frame = url, on_frame
        self.last = 10**18
        self.seen = 0
        self.dropped = False
        self.connected = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        import httpx

        try:
            with httpx.Client(timeout=60) as client, client.stream("GET", self.url) as response:
                self.connected.set()
                if self.on_frame is None:
                    self._count(response.iter_bytes())
                else:
                    self._parse(response.iter_lines())
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.connected.set()
            self.done.set()

    def _count(self, chunks: Iterator[bytes]) -> None:
        """Count frames without parsing them line by line (cheap on a shared GIL)."""
        tail = b""
        for chunk in chunks:
            buf = tail + chunk
            end = buf.rfind(b"\n\n") + 2
            whole, tail = buf[:end], buf[end:]
            self.seen += whole.count(b"id: ")
            if b"event: dropped" in whole:
                self.dropped = True
                return
            last = whole.rfind(b"id: ")
            if last >= 0 and int(whole[last + 4:whole.index(b"\n", last)]) >= self.last:
                return

    def _parse(self, lines: Iterator[str]) -> None:
        assert self.on_frame is not None
        for line in lines:
            if line.startswith("id: "):
                self.seen += 1
                if int(line[4:]) >= self.last:
                    return
            elif line.startswith("data: "):
                self.on_frame(line[6:].encode())


def _open(url: str, count: int, streams: Any, last: int, **kw: Any) -> list[_Reader]:
    """``count`` readers, connected, that stop at seq ``last``."""
    readers = [_Reader(url, **kw) for _ in range(count)]
    wanted = streams.events.statistics().clients_accepted + count  # earlier ones may linger
    for reader in readers:
        reader.last = last
        reader.start()
    deadline = time.monotonic() + 30
    while streams.events.statistics().clients_accepted < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError("the bench clients did not connect")
        time.sleep(0.01)
    return readers


def _finish(readers: list[_Reader]) -> None:
    for reader in readers:
        if not reader.done.wait(120):
            raise RuntimeError(f"a bench client did not get its last event (saw {reader.seen})")
        if reader.error is not None:
            raise reader.error


def _delivery_rate(rt: Runtime, streams: Any, url: str, clients: int, events: int) -> float:
    readers = _open(url, clients, streams, rt.bus.last_seq + events)
    start = time.perf_counter()
    for i in range(events):
        rt.bus.emit("player:moved", {"x": i, "y": -i})
    _finish(readers)
    elapsed = time.perf_counter() - start
    if any(r.seen < events for r in readers):
        raise RuntimeError(f"a bench client missed events: {[r.seen for r in readers]}")
    return events / elapsed


def _emit_costs(rt: Runtime, events: int) -> tuple[float, float]:
    """(thread CPU seconds, wall seconds) per emit of ``events`` emits."""
    emit = rt.bus.emit
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(events):
        emit("player:moved", {"x": i, "y": -i})
    return (time.thread_time() - cpu) / events, (time.perf_counter() - wall) / events


def _emit_cost_rows(rt: Runtime, streams: Any, url: str, events: int,
                    rounds: int) -> BenchRow:
    alone: list[tuple[float, float]] = []
    watched: list[tuple[float, float]] = []
    for _ in range(rounds):
        alone.append(_emit_costs(rt, events))
        readers = _open(url, _CLIENTS, streams, rt.bus.last_seq + events)
        watched.append(_emit_costs(rt, events))
        _finish(readers)
    dropped = streams.events.statistics().clients_dropped
    base_cpu, base_wall = min(c for c, _ in alone), min(w for _, w in alone)
    with_cpu, with_wall = min(c for c, _ in watched), min(w for _, w in watched)
    ratio = with_cpu / base_cpu
    return BenchRow(
        _AREA, f"emit cost with {_CLIENTS} SSE clients vs none (emitting thread CPU)",
        with_cpu * 1e9, "ns/emit", f"<= {_MAX_EMIT_COST:.2f}x of no clients",
        peer="no clients", peer_value=base_cpu * 1e9, ratio=base_cpu / with_cpu,
        ok=ratio <= _MAX_EMIT_COST and not dropped,
        note=f"{dropped} clients dropped; cost ratio {ratio:.3f}x CPU; "
             f"wall clock {with_wall / base_wall:.2f}x "
             f"({base_wall * 1e9:.0f} -> {with_wall * 1e9:.0f} ns: the server and "
             f"{_CLIENTS} reader threads share the GIL)")


def _latency_p99(rt: Runtime, streams: Any, url: str, events: int) -> tuple[float, float]:
    """(p50, p99) milliseconds from emit to receipt at 1,000 events/s."""
    delays: list[float] = []

    def arrived(data: bytes) -> None:
        sent = json.loads(data)["data"]["t"]
        delays.append((time.perf_counter_ns() - sent) / 1e6)

    readers = _open(url, 1, streams, rt.bus.last_seq + events, on_frame=arrived)
    start = time.perf_counter()
    for i in range(events):
        due = start + i / 1000.0
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        rt.bus.emit("player:moved", {"i": i, "t": time.perf_counter_ns()})
    _finish(readers)
    ordered = sorted(delays)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run(quick: bool) -> list[BenchRow]:
    """Measure the rows (``quick``: smaller workloads)."""
    names = ("SSE events/s delivered, 1 client", f"SSE events/s delivered, {_CLIENTS} clients",
             f"emit cost with {_CLIENTS} SSE clients vs none (emitting thread CPU)",
             "SSE p99 event -> client receipt at 1,000 events/s")
    for module, package in (("uvicorn", "moonbus[http]"), ("sse_starlette", "moonbus[http]"),
                            ("httpx", "httpx")):
        reason = missing_peer(module, package)
        if reason is not None:
            return [skipped_row(_AREA, name, "-", reason) for name in names]
    from moonbus.http.stream_settings import StreamSettings
    from moonbus.http.streams import StreamRoutes

    events = 2_000 if quick else 20_000
    with Runtime(threaded=False) as rt:
        # Bursts of up to 5 x events per client: no client may be dropped (a drop
        # detaches the hub and would make the "with clients" emits cheaper).
        streams = StreamRoutes(rt, StreamSettings(client_buffer=events * 6))
        with _serving(streams.routes) as base:
            url = base + "/api/stream/events"
            one = _delivery_rate(rt, streams, url, 1, events)
            many = _delivery_rate(rt, streams, url, _CLIENTS, events // 4)
            cost = _emit_cost_rows(rt, streams, url, events * 5, 2 if quick else 3)
            p50, p99 = _latency_p99(rt, streams, url, 300 if quick else 3_000)
    note = f"one process: server thread + httpx reader threads; client_buffer {events * 6:,}"
    return [
        BenchRow(_AREA, names[0], one, "events/s", ">= 10,000 events/s", ok=one >= 10_000,
                 note=note),
        BenchRow(_AREA, names[1], many, "events/s", ">= 1,000 events/s to each client",
                 ok=many >= 1_000, note=f"{many * _CLIENTS:,.0f} deliveries/s; {note}"),
        cost,
        BenchRow(_AREA, names[3], p99, "ms", "<= 50 ms", ok=p99 <= 50.0,
                 note=f"p50 {p50:.1f} ms; client-side receipt in Python (httpx thread, "
                      "same process); the browser-side figure is the console's"),
    ]
