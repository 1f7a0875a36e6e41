"""Script-host benchmarks: event delivery into Lua, shared counters, scale.

Rows (each measured side by side with its peer in the same run):

* event → Lua handler reading 3 fields: ``Bus.emit`` committing every event
  and running a sandboxed, time-limited Lua handler, against the glue people
  write by hand — a ``queue.Queue``, a consumer thread owning a raw lupa
  runtime, and a dict payload per event converted to a Lua table. Two rows:
  immediate delivery (the default: the handler has run when ``emit``
  returns, which the glue does not give) and deferred delivery (the glue's
  own shape: emit queues, an event thread runs the handlers, timed until
  all have run).
* p99 emit → handler latency at 10k events/s (paced emits), immediate and
  deferred delivery.
* ``counter:increment()`` from Lua on the memory store, against a "naive
  binding": a Python counter object handed to a raw lupa runtime, its method
  fetched by attribute on every call.
* 1,000 scripts (TICK handler + poll) at 10 ticks/s: RSS and tick lag.
"""

from __future__ import annotations

import gc
import os
import queue
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from moonbus.bench.harness import BenchRow, LockedCounter, ratio_row
from moonbus.bus.core import native_available as bus_native_available
from moonbus.lua.exposure import lua_api
from moonbus.lua.fastcall import native_available as lua_native_available
from moonbus.runtime import Runtime

__all__ = ["run"]

AREA = "host"
HANDLER = """
local n = 0
events:on("game_action", function(e)
  if e.interaction and e.scene_x and e.entity_idx then n = n + 1 end
end)
"""
PAYLOAD = {"interaction": "Mine Iron rocks", "scene_x": 10, "entity_idx": 3}


def _script(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(text, encoding="utf-8")
    return path


def _ours_events_per_second(
    directory: Path, n: int, *, native: bool = True, deferred: bool = False
) -> float:
    """Immediate delivery (default): the handler has run when emit returns.
    Deferred delivery (the glue's own shape, done by moonbus): emit commits and
    queues, the event thread runs the handler in batches; timed until every
    handler has run."""
    if deferred:
        rt = Runtime(event_delivery="deferred", native=native)
    else:
        rt = Runtime(threaded=False, clock=lambda: 0.0, native=native)
    with rt:
        host = rt.load(_script(directory, "handler", HANDLER))
        host.start()
        emit = rt.bus.emit
        start = time.perf_counter()
        for i in range(n):
            emit("game_action", PAYLOAD, tick=i)
        if not rt.flush_events(timeout=60.0):
            raise RuntimeError("deferred benchmark: events still queued after 60 s")
        elapsed = time.perf_counter() - start
        if host.handler_errors:
            raise RuntimeError(f"benchmark handler failed: {host.errors[-1]}")
    return n / elapsed


def _glue_events_per_second(n: int) -> float:
    import lupa.lua54 as lua

    inbox: queue.Queue[dict[str, object] | None] = queue.Queue()
    done = threading.Event()

    def consumer() -> None:
        rt = lua.LuaRuntime()
        handler = rt.eval(
            "function(e) if e.interaction and e.scene_x and e.entity_idx then return 1 end end"
        )
        while True:
            item = inbox.get()
            if item is None:
                break
            handler(rt.table_from(item))
        done.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    start = time.perf_counter()
    for i in range(n):
        inbox.put({**PAYLOAD, "tick": i})
    inbox.put(None)
    done.wait()
    elapsed = time.perf_counter() - start
    thread.join()
    return n / elapsed


@lua_api
class _Probe:
    """Records when the Lua handler started (perf_counter, seconds)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())


def _latency_p99_us(
    directory: Path, n: int, rate: float, *, deferred: bool = False
) -> tuple[float, float]:
    """p99 and p50 from ``emit`` to the handler's start, emits paced at ``rate``.

    Immediate delivery: the host spins between emits (precise pacing; the
    handler runs on the emitting thread). Deferred: the host sleeps between
    emits, as a game loop does between ticks. A host that spins in Python
    holds the GIL, and the event thread's handler (which calls ``probe``, a
    Python object) would wait up to the switch interval for it: that is the
    GIL, not the queue (README, "Deferred event delivery")."""
    probe = _Probe()
    runtime = (Runtime(event_delivery="deferred") if deferred
               else Runtime(threaded=False, clock=lambda: 0.0))
    with runtime as rt:
        rt.register_api("probe", probe)
        script = _script(directory, "latency", 'events:on("ping", function() probe:mark() end)')
        host = rt.load(script)
        host.start()
        starts: list[float] = []
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(n):
            if deferred:
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            else:
                while time.perf_counter() < next_at:
                    pass
            starts.append(time.perf_counter())
            rt.bus.emit("ping", {"i": i})
            next_at += interval
        if not rt.flush_events(timeout=60.0):
            raise RuntimeError("latency benchmark: events still queued after 60 s")
    lat = sorted((m - s) * 1e6 for s, m in zip(starts, probe.marks, strict=True))
    return lat[int(len(lat) * 0.99) - 1], lat[len(lat) // 2]


def _ours_increment_ns(directory: Path, n: int) -> float:
    # Wall time around the whole on_start (os.clock would count every thread
    # of the process); the loop dominates, task set-up is a few microseconds.
    text = f"""
    function on_start()
      local c = shared:int("hits")
      for i = 1, {n} do c:increment() end
    end
    """
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        host = rt.load(_script(directory, "counter", text))
        host.start()
        start = time.perf_counter()
        rt.run_due(0.0)
        elapsed = time.perf_counter() - start
        if host.shared.int("hits").get() != n:
            raise RuntimeError(f"counter benchmark failed: {host.errors}")
    return elapsed / n * 1e9


def _naive_increment_ns(n: int) -> float:
    import lupa.lua54 as lua

    rt = lua.LuaRuntime()
    counter = LockedCounter()
    loop = rt.eval(f"function(c) for i = 1, {n} do c:increment() end end")
    start = time.perf_counter()
    loop(counter)
    elapsed = time.perf_counter() - start
    if counter.value != n:
        raise RuntimeError("naive counter benchmark failed")
    return elapsed / n * 1e9


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _scale(directory: Path, scripts: int, seconds: float) -> tuple[float, float, int, int]:
    text = """
    events:on("tick", function(e) shared:int("ticks"):increment() end)
    function poll() shared:int("polls"):increment() return 100 end
    """
    path = _script(directory, "scaled", text)
    before = _rss_mb()
    with Runtime(threaded=True, workers=2) as rt:
        hosts = [rt.load(path) for _ in range(scripts)]
        for host in hosts:
            host.start()
        # A game freezes what it loaded: a full collection of the scripts'
        # objects would otherwise run inside whichever handler triggers it,
        # and its CPU time counts against that handler's time limit.
        gc.collect()
        gc.freeze()
        time.sleep(1.0)  # measure the steady state: every script polling on its cadence
        lags: list[float] = []
        ticks = int(seconds * 10)
        next_at = time.perf_counter()
        for tick in range(1, ticks + 1):
            next_at += 0.1
            start = time.perf_counter()
            rt.bus.emit("tick", {"tick": tick}, tick=tick)
            lags.append(time.perf_counter() - start)
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        rss = _rss_mb() - before
        handled = sum(h.shared.int("ticks").get() for h in hosts)
        polls = sum(h.polls for h in hosts)
        failed = [h.name for h in hosts if h.status != "running"]
        gc.unfreeze()  # the runtime's objects are collectable again once it closes
        if failed or handled != scripts * ticks:
            raise RuntimeError(f"scale benchmark lost work: {failed[:3]} {handled}")
    lags.sort()
    return rss, lags[int(len(lags) * 0.99) - 1] * 1000, polls, ticks


def run(quick: bool) -> list[BenchRow]:
    """The host rows; ``quick`` shrinks every workload."""
    n_events = 5_000 if quick else 100_000
    n_incr = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        # Interleaved rounds, best of each: a noisy moment hurts all alike.
        ours = glue = python_path = deferred = 0.0
        for _ in range(1 if quick else 3):
            ours = max(ours, _ours_events_per_second(directory, n_events))
            glue = max(glue, _glue_events_per_second(n_events))
            deferred = max(deferred, _ours_events_per_second(directory, n_events, deferred=True))
            python_path = max(
                python_path, _ours_events_per_second(directory, n_events, native=False)
            )
        path = ("C fast paths" if bus_native_available() and lua_native_available()
                else "pure-Python paths (C fast paths not built)")
        # Immediate delivery does more than the glue (the handler has run when
        # emit returns, on the emitting thread, with no second thread to share
        # the work): its ratio is shown, and the 2.5x target is the deferred
        # row's, which has the glue's shape (a queue and a consumer thread).
        throughput = ratio_row(
            AREA, "event -> Lua handler reading 3 fields", ours=ours,
            peer="queue.Queue + thread + dict payload", theirs=glue, unit="events/s",
            higher_is_better=True, min_ratio=None,
            target=">= 200k events/s (synchronous: done when emit returns; "
            "2.5x glue: deferred row)",
            note=f"{path}; ours commits every event (seq, log) and runs a sandboxed, "
            "time-limited handler before emit returns",
        )
        deferred_row = ratio_row(
            AREA, "event -> Lua handler, deferred delivery", ours=deferred,
            peer="queue.Queue + thread + dict payload", theirs=glue, unit="events/s",
            higher_is_better=True, min_ratio=2.5,
            target=">= 200k events/s, >= 2.5x glue",
            note=f"{path}; Runtime(event_delivery='deferred'): emit commits and queues, "
            "the event thread runs handlers in batches (the glue's shape); timed until "
            "every handler ran",
        )
        rows = [
            replace(throughput, ok=ours >= 200_000),
            replace(deferred_row, ok=bool(deferred_row.ok) and deferred >= 200_000),
            ratio_row(
                AREA, "event -> Lua handler (pure-Python path)", ours=python_path,
                peer="queue.Queue + thread + dict payload", theirs=glue, unit="events/s",
                higher_is_better=True, min_ratio=None,
                target="reference (no target): Runtime(native=False)",
            ),
        ]
        p99, p50 = _latency_p99_us(directory, 2_000 if quick else 10_000, 10_000.0)
        rows.append(BenchRow(AREA, "emit -> handler latency at 10k events/s (p99)", p99, "us",
                             target="p99 <= 200 us", ok=p99 <= 200.0, note=f"p50 {p50:.1f} us"))
        p99, p50 = _latency_p99_us(directory, 2_000 if quick else 10_000, 10_000.0,
                                   deferred=True)
        rows.append(BenchRow(
            AREA, "emit -> handler latency at 10k events/s, deferred (p99)", p99, "us",
            target="reference (no target): queued, run by the event thread",
            note=f"p50 {p50:.1f} us; the host sleeps between emits",
        ))
        ours_ns = naive_ns = float("inf")
        for _ in range(1 if quick else 3):  # interleaved rounds, best of each
            ours_ns = min(ours_ns, _ours_increment_ns(directory, n_incr))
            naive_ns = min(naive_ns, _naive_increment_ns(n_incr))
        counter = ratio_row(
            AREA, "counter:increment() from Lua", ours=ours_ns,
            peer="naive binding (Python object, method by attribute)", theirs=naive_ns,
            unit="ns/op", higher_is_better=False, min_ratio=5.0,
            target="<= 500 ns/op, >= 5x naive",
        )
        rows.append(replace(counter, ok=bool(counter.ok) and ours_ns <= 500.0))
        scripts = 50 if quick else 1_000
        rss, lag_p99, polls, ticks = _scale(directory, scripts, 1.0 if quick else 5.0)
        rows.append(BenchRow(
            AREA, f"{scripts} scripts, TICK handler + poll, 10 ticks/s: RSS", rss, "MiB",
            target="< 1024 MiB for 1,000 scripts", ok=rss < 1024 if not quick else None,
            note=f"{polls} polls in {ticks} ticks; pid {os.getpid()}",
        ))
        rows.append(BenchRow(
            AREA, f"{scripts} scripts: tick emit -> all handlers done (p99)", lag_p99, "ms",
            target="no tick lag (< 100 ms per tick)", ok=lag_p99 < 100.0,
        ))
    return rows
