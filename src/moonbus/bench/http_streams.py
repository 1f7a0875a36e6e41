"""Live event streams (SSE): delivery rate, emit cost with clients, receipt latency.

Rows (a uvicorn server thread serving ``StreamRoutes`` and the emitting
thread share this process, as in a game; the clients are httpx threads in a
process of their own, ``_sse_readers``, as browsers would be):

* events/s delivered to 1 and to 50 SSE clients: events emitted back to back,
  timed from the first emit until every client has read the last event.
* emit cost with 50 clients attached against none, side by side (best of
  alternating rounds): the CPU time of the emitting thread per emit
  (``time.thread_time``), which is what the hub adds to the emit path (one
  ``deque.append``); target at most 10 % more. The wall-clock ratio, which
  also counts the server thread taking the GIL to encode and send, is in the note.
* the same at a game's pace: 10,000 events/s in 60 frames a second (each
  frame's events back to back, then a sleep), the wall-clock time of the
  emit calls themselves with 50 clients reading against none: what a game
  feels; the server thread does its work in the frames' idle time.
* emit cost with the hub's bus handler attached against none, without a
  server (what the hub itself adds to ``emit``: one ``deque.append``).
* p99 event -> client receipt latency at 1,000 events/s: each event carries
  its emit time; a reader thread (httpx, Python) notes when its frame
  arrived (in this process, to read the same clock). This is client-side
  receipt in Python; the browser-side figure is the console's (Chromium).

Threads: ``run`` starts the server, the readers and the emitter, and stops
them all before it returns.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moonbus.bench._sse_readers import Reader
from moonbus.bench.harness import BenchRow, missing_peer, skipped_row
from moonbus.runtime import Runtime

__all__ = ["run"]

_AREA = "http"
_CLIENTS = 50
_MAX_EMIT_COST = 1.10
_PACED_RATE = 10_000  # events/s a busy game emits (the paced row)
_FPS = 60


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


class _Clients:
    """``count`` SSE clients of ``url`` in a process of their own (``_sse_readers``),
    connected when this returns; ``finish`` waits until each saw seq ``last``."""

    def __init__(self, url: str, count: int, streams: Any, last: int) -> None:
        wanted = streams.events.statistics().clients_accepted + count  # earlier ones may linger
        program = Path(__file__).with_name("_sse_readers.py")
        self._proc = subprocess.Popen(
            [sys.executable, str(program), url, str(count), str(last)],
            stdout=subprocess.PIPE, text=True)
        _wait_accepted(streams, wanted, self._proc)
        self.count = count

    def finish(self) -> tuple[list[int], int, float]:
        """(events each client saw, clients dropped, ``time.time()`` the last one was done)."""
        out, _ = self._proc.communicate(timeout=300)
        summary = json.loads(out.strip().splitlines()[-1])
        if summary["errors"]:
            raise RuntimeError(f"bench clients failed: {summary['errors'][:3]}")
        return summary["seen"], summary["dropped"], summary["finished_at"]


def _wait_accepted(streams: Any, wanted: int, proc: subprocess.Popen[str] | None) -> None:
    deadline = time.monotonic() + 60
    while streams.events.statistics().clients_accepted < wanted:
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise RuntimeError("the bench clients did not connect")
        time.sleep(0.01)


def _delivery_rate(rt: Runtime, streams: Any, url: str, clients: int, events: int) -> float:
    readers = _Clients(url, clients, streams, rt.bus.last_seq + events)
    start = time.time()  # the clients' clock: they run in another process
    for i in range(events):
        rt.bus.emit("player:moved", {"x": i, "y": -i})
    seen, dropped, finished = readers.finish()
    elapsed = finished - start
    if dropped or any(n < events for n in seen):
        raise RuntimeError(f"bench clients missed events: {seen[:5]}..., dropped {dropped}")
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
        readers = _Clients(url, _CLIENTS, streams, rt.bus.last_seq + events)
        watched.append(_emit_costs(rt, events))
        readers.finish()
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
             f"({base_wall * 1e9:.0f} -> {with_wall * 1e9:.0f} ns: the server thread "
             "shares the GIL)")


def _paced_costs(rt: Runtime, rate: int, seconds: float) -> tuple[float, float]:
    """(thread CPU seconds, wall seconds) per emit when the game emits ``rate``
    events/s in 60 frames a second (each frame's events back to back, then a
    sleep until the next frame): the emit calls' own time, not the sleeps."""
    emit = rt.bus.emit
    frames = int(seconds * _FPS)
    per_frame = rate // _FPS
    busy = 0.0
    cpu = time.thread_time()
    start = time.perf_counter()
    i = 0
    for frame in range(frames):
        pause = start + frame / _FPS - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter()
        for _ in range(per_frame):
            emit("player:moved", {"x": i, "y": -i})
            i += 1
        busy += time.perf_counter() - began
    cpu = time.thread_time() - cpu
    return cpu / i, busy / i


def _paced_cost_row(rt: Runtime, streams: Any, url: str, seconds: float,
                    rounds: int) -> BenchRow:
    """Emit cost at a game's pace (``_PACED_RATE`` events/s, 60 frames/s) with
    50 clients reading against none, alternating rounds (best of each side)."""
    alone: list[tuple[float, float]] = []
    watched: list[tuple[float, float]] = []
    per_round = (_PACED_RATE // _FPS) * int(seconds * _FPS)
    for _ in range(rounds):
        alone.append(_paced_costs(rt, _PACED_RATE, seconds))
        readers = _Clients(url, _CLIENTS, streams, rt.bus.last_seq + per_round)
        watched.append(_paced_costs(rt, _PACED_RATE, seconds))
        readers.finish()
    base_cpu, base_wall = min(c for c, _ in alone), min(w for _, w in alone)
    with_cpu, with_wall = min(c for c, _ in watched), min(w for _, w in watched)
    ratio = with_wall / base_wall
    dropped = streams.events.statistics().clients_dropped
    return BenchRow(
        _AREA, f"emit cost at {_PACED_RATE:,} events/s (60 frames/s) with {_CLIENTS} SSE "
        "clients vs none (wall clock of the emits)",
        with_wall * 1e9, "ns/emit", f"<= {_MAX_EMIT_COST:.2f}x of no clients",
        peer="no clients", peer_value=base_wall * 1e9, ratio=base_wall / with_wall,
        ok=ratio <= _MAX_EMIT_COST and not dropped,
        note=f"wall ratio {ratio:.3f}x, emitting thread CPU {with_cpu / base_cpu:.3f}x; "
             f"{rounds} alternating rounds of {seconds:g} s, best of each; {dropped} dropped")


def _hub_cost_row(rt: Runtime, events: int, rounds: int) -> BenchRow:
    """The emit path's own share: what the hub attaches (``deque.append`` on
    ``*``, as ``StreamRoutes`` does), without a server competing for the GIL."""
    alone: list[float] = []
    attached: list[float] = []
    for _ in range(rounds):
        alone.append(_emit_costs(rt, events)[0])
        # The pump empties the inbox every few ms: it never holds many events.
        inbox: deque[Any] = deque(maxlen=1_000)
        sub = rt.bus.on("*", inbox.append, owner="bench")
        attached.append(_emit_costs(rt, events)[0])
        sub.cancel()
    base, hub = min(alone), min(attached)
    ratio = hub / base
    return BenchRow(
        _AREA, "emit cost with the stream hub attached vs none (no server work)",
        hub * 1e9, "ns/emit", f"<= {_MAX_EMIT_COST:.2f}x of no hub", peer="no hub",
        peer_value=base * 1e9, ratio=base / hub, ok=ratio <= _MAX_EMIT_COST,
        note=f"cost ratio {ratio:.3f}x: the one deque.append per event on the emitting thread")


def _latency_p99(rt: Runtime, streams: Any, url: str, events: int) -> tuple[float, float]:
    """(p50, p99) milliseconds from emit to receipt at 1,000 events/s."""
    delays: list[float] = []

    def arrived(data: bytes) -> None:
        sent = json.loads(data)["data"]["t"]
        delays.append((time.perf_counter_ns() - sent) / 1e6)

    wanted = streams.events.statistics().clients_accepted + 1
    reader = Reader(url, rt.bus.last_seq + events, on_frame=arrived)  # in-process: one clock
    reader.start()
    _wait_accepted(streams, wanted, None)
    start = time.perf_counter()
    for i in range(events):
        due = start + i / 1000.0
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        rt.bus.emit("player:moved", {"i": i, "t": time.perf_counter_ns()})
    if not reader.done.wait(120) or reader.error is not None:
        raise RuntimeError(f"the latency client failed: {reader.error!r}")
    ordered = sorted(delays)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run(quick: bool) -> list[BenchRow]:
    """Measure the rows (``quick``: smaller workloads)."""
    names = ("SSE events/s delivered, 1 client", f"SSE events/s delivered, {_CLIENTS} clients",
             "emit cost with the stream hub attached vs none (no server work)",
             f"emit cost with {_CLIENTS} SSE clients vs none (emitting thread CPU)",
             f"emit cost at {_PACED_RATE:,} events/s (60 frames/s) with {_CLIENTS} SSE "
             "clients vs none (wall clock of the emits)",
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
        streams = StreamRoutes(rt, StreamSettings(client_buffer=events * 6,
                                                  client_buffer_bytes=events * 6 * 1024))
        with _serving(streams.routes) as base:
            url = base + "/api/stream/events"
            one = _delivery_rate(rt, streams, url, 1, events)
            many = _delivery_rate(rt, streams, url, _CLIENTS, events // 4)
            hub = _hub_cost_row(rt, events, 7 if quick else 25)  # many short alternations
            cost = _emit_cost_rows(rt, streams, url, events * 5, 2 if quick else 3)
            paced = _paced_cost_row(rt, streams, url, 0.5 if quick else 2.0, 2 if quick else 4)
            p50, p99 = _latency_p99(rt, streams, url, 300 if quick else 3_000)
    note = f"clients: httpx threads in another process; client_buffer {events * 6:,}"
    return [
        BenchRow(_AREA, names[0], one, "events/s", ">= 10,000 events/s", ok=one >= 10_000,
                 note=note),
        BenchRow(_AREA, names[1], many, "events/s", ">= 1,000 events/s to each client",
                 ok=many >= 1_000, note=f"{many * _CLIENTS:,.0f} deliveries/s; {note}"),
        hub,
        cost,
        paced,
        BenchRow(_AREA, names[5], p99, "ms", "<= 50 ms", ok=p99 <= 50.0,
                 note=f"p50 {p50:.1f} ms; client-side receipt in Python (httpx thread, "
                      "same process); the browser-side figure is the console's"),
    ]
