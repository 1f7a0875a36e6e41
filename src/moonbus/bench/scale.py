"""Scale benchmarks: 10,000 scripts in one process (issue 16, "Per-script memory").

Rows (targets from the issue; ``--quick`` runs 200 scripts for a short while,
so CI stays fast, and checks no target):

* N handler-only scripts (one ``tick`` handler each, so one Lua state each):
  RSS of the process, and a tick emit → all handlers done (p99) at 10 ticks/s;
* N scripts with ``poll`` at 1 poll/s each (one Lua state each: a poll-only
  script keeps only its main engine, ``moonbus.host.event_on_demand``): RSS,
  and how late the latest poll ran against its fixed schedule, from when
  no poll is overdue any more (the load and the ``gc.collect()`` after it
  hold the GIL for seconds; the polls due meanwhile run late once, and the
  note says how long catching up took) until the window ends (polls that
  run while the runtime then stops 10,000 scripts are not the steady state).

Both run with ``HostSettings()``'s arena chunks per script engine
(``lua_arena_bytes=DEFAULT_ARENA_BYTES``, the default; docs/limits.md), said
here explicitly so that the rows keep measuring it. Each workload runs in a fresh child process
(``spawn``): RSS is the child's growth from before its runtime was made, not memory the parent or an
earlier workload left in the heap. The 1,000-script row (TICK handler + poll)
stays in ``moonbus.bench.host``.
"""

from __future__ import annotations

import gc
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moonbus.bench.harness import BenchRow
from moonbus.host.context import HostSettings
from moonbus.lua.exposure import lua_api
from moonbus.lua.sandbox import DEFAULT_ARENA_BYTES
from moonbus.runtime import Runtime

__all__ = ["run"]

AREA = "scale"
FULL_SCRIPTS = 10_000
QUICK_SCRIPTS = 200
HANDLER_ONLY = 'events:on("tick", function(e) shared:int("ticks"):increment() end)\n'
POLLING = "function poll() clock:mark(options.i) return 1000 end\n"
CHILD_TIMEOUT = 900.0  # seconds: 10,000 scripts load in well under a minute


def _scale_settings() -> HostSettings:
    """Arena chunks per script engine (``moonbus.lua.arena``; the default,
    named so that a change of default does not change what the rows measure)."""
    return HostSettings(lua_arena_bytes=DEFAULT_ARENA_BYTES)


@dataclass(frozen=True)
class ScaleResult:
    """What one child measured: RSS growth (MiB) and the workload's figure (ms)."""

    scripts: int
    rss_mb: float
    figure_ms: float
    note: str


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@lua_api
class _PollClock:
    """When each script's polls started (perf_counter seconds), by script index."""

    def __init__(self, scripts: int) -> None:
        self.marks: list[list[float]] = [[] for _ in range(scripts)]

    def mark(self, index: int) -> None:
        self.marks[index].append(time.perf_counter())


def _handler_only(scripts: int, ticks: int) -> ScaleResult:
    """Tick p99 over ``ticks`` ticks at 10 ticks/s, after every script started."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "handler.lua"
        path.write_text(HANDLER_ONLY, encoding="utf-8")
        before = _rss_mb()
        with Runtime(threaded=True, workers=2, settings=_scale_settings()) as rt:
            hosts = [rt.load(path) for _ in range(scripts)]
            for host in hosts:
                host.start()
            gc.collect()
            gc.freeze()  # as a game does after loading (see bench.host._scale)
            lags: list[float] = []
            cpu: list[float] = []  # process CPU time per tick: what the load cannot stretch
            next_at = time.perf_counter()
            for tick in range(1, ticks + 1):
                next_at += 0.1
                start = time.perf_counter()
                start_cpu = time.process_time()
                rt.bus.emit("tick", {"tick": tick}, tick=tick)
                lags.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            rss = _rss_mb() - before
            handled = sum(h.shared.int("ticks").get() for h in hosts)
            engines = rt.factory.statistics().engines_created
            gc.unfreeze()
            if handled != scripts * ticks:
                raise RuntimeError(f"scale benchmark lost work: {handled} of {scripts * ticks}")
    lags.sort()
    cpu.sort()
    p99 = lags[max(0, int(len(lags) * 0.99) - 1)] * 1000
    cpu_p99 = cpu[max(0, int(len(cpu) * 0.99) - 1)] * 1000
    # the p50s too: the p99 follows the machine's noise, the p50s are what a
    # change to the tick's own cost moves (compare those between builds)
    return ScaleResult(scripts, rss, p99, f"{engines} Lua states; {ticks} ticks; "
                       f"{rss * 1024 / scripts:.0f} KiB per script; tick p50 "
                       f"{lags[len(lags) // 2] * 1000:.1f} ms; CPU per tick p50 "
                       f"{cpu[len(cpu) // 2] * 1000:.1f} ms, p99 {cpu_p99:.0f} ms")


def _polling(scripts: int, seconds: float) -> ScaleResult:
    """The latest poll against its fixed schedule, once every script has started."""
    clock = _PollClock(scripts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "poller.lua"
        path.write_text(POLLING, encoding="utf-8")
        before = _rss_mb()
        with Runtime(threaded=True, workers=2, settings=_scale_settings()) as rt:
            rt.register_api("clock", clock)
            hosts = [rt.load(path, {"i": i}) for i in range(scripts)]
            for host in hosts:
                host.start()
            gc.collect()  # with 10,000 scripts about a second with the GIL held:
            gc.freeze()  # the polls due meanwhile run late, once
            time.sleep(1.0)  # every script has polled once
            caught_up = _caught_up(rt)  # the steady state from here
            settled = time.perf_counter()
            time.sleep(seconds)
            ended = time.perf_counter()  # polls after this run while the runtime shuts down
            rss = _rss_mb() - before
            failed = [h.name for h in hosts if h.status != "running"]
            gc.unfreeze()
            if failed:
                raise RuntimeError(f"scale benchmark: scripts not running: {failed[:3]}")
    late = 0.0
    polls = 0
    catching_up = f"; {caught_up:.1f} s to catch up after loading" if caught_up else ""
    for marks in clock.marks:
        window = [t for t in marks if settled <= t < ended]
        polls += len(window)
        if len(window) < 2:
            continue
        # Fixed schedule (SPEC §10): poll k of the window is due k seconds after
        # the earliest on-schedule one; lateness is how far past that it ran.
        base = min(t - k for k, t in enumerate(window))
        late = max(late, max(t - k - base for k, t in enumerate(window)))
    expected = int(scripts * seconds)
    if polls < expected * 0.9:  # the workers fell behind: every missing poll is late
        late = max(late, seconds)
    return ScaleResult(scripts, rss, late * 1000, f"{polls} of {expected} polls in "
                       f"{seconds:.0f} s; {rss * 1024 / scripts:.0f} KiB per script"
                       f"{catching_up}")


def _caught_up(rt: Runtime, limit: float = 30.0) -> float:
    """Wait until no task is overdue (the backlog of the load and its
    collection has run); return how long that took, in seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        due = rt.scheduler.next_due()
        if due is None or due >= time.monotonic() - 0.005:
            break
        time.sleep(0.05)
    return time.monotonic() - start


def _child(kind: str, scripts: int, length: float, conn: Any) -> None:
    try:
        if kind == "handler":
            conn.send(_handler_only(scripts, int(length)))
        elif kind == "poll":
            conn.send(_polling(scripts, length))
        else:
            raise ValueError(f"unknown workload {kind!r}: 'handler' or 'poll'")
    except BaseException as exc:  # reported by the parent
        conn.send(RuntimeError(f"{kind}: {exc!r}"))
    finally:
        conn.close()


def measure(kind: str, scripts: int, length: float) -> ScaleResult:
    """Run one workload (``"handler"``: ``length`` ticks; ``"poll"``: ``length``
    seconds) in a fresh child process and return what it measured."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(kind, scripts, length, send))
    child.start()
    send.close()
    try:
        if not receive.poll(CHILD_TIMEOUT):
            raise RuntimeError(f"scale benchmark ({kind}) gave no result in {CHILD_TIMEOUT} s")
        result = receive.recv()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, ScaleResult):
        raise RuntimeError(f"scale benchmark ({kind}) sent {result!r}")
    return result


def run(quick: bool) -> list[BenchRow]:
    """The scale rows; ``quick`` runs 200 scripts briefly and checks no target."""
    scripts = QUICK_SCRIPTS if quick else FULL_SCRIPTS
    full = not quick
    # 200 ticks (20 s): the garbage each state keeps between its young
    # collections is in the RSS (at Lua's default multiplier 50 ticks hid
    # ~250 MiB of it), and the tick p99 sees the collections spread out
    handler = measure("handler", scripts, 10 if quick else 200)
    polling = measure("poll", scripts, 2.0 if quick else 10.0)
    name = f"{scripts:,} handler-only scripts (tick handler)"
    polled = f"{scripts:,} scripts with poll at 1/s"
    return [
        BenchRow(AREA, f"{name}: RSS", handler.rss_mb, "MiB",
                 target="<= 2048 MiB for 10,000 scripts",
                 ok=handler.rss_mb <= 2048 if full else None, note=handler.note),
        BenchRow(AREA, f"{name}: tick emit -> all handlers done (p99)", handler.figure_ms,
                 "ms", target="p99 <= 100 ms", ok=handler.figure_ms <= 100 if full else None),
        BenchRow(AREA, f"{polled}: RSS", polling.rss_mb, "MiB",
                 target="<= 3072 MiB for 10,000 scripts",
                 ok=polling.rss_mb <= 3072 if full else None, note=polling.note),
        BenchRow(AREA, f"{polled}: latest poll against its schedule", polling.figure_ms, "ms",
                 target="<= 100 ms late", ok=polling.figure_ms <= 100 if full else None),
    ]
