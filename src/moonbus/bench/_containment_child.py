"""One containment attack, measured in a process of its own.

``moonbus.bench.containment`` runs ``attack_main`` in a process forked from a
forkserver that has imported this module (so a process starts in
milliseconds, not the seconds an import of lupa and moonbus takes on a busy
machine), and reads the messages it sends on a pipe. A process of its own is
the hard bound the benchmark needs: an attack that is not contained may hang
the host's ``emit`` or eat memory, and the parent then kills this process at
its wall-clock or memory bound and still reports the row (NOT CONTAINED).
This file imports only the public embedding API (``Runtime``,
``HostSettings``, ``lua_api``).

Phases, in one runtime (everything here runs on the main thread, except the
runtime's own threads and, for a cascade, one thread that emits the trigger):

1. *alone*: the companion alone; the host emits ``ping`` events, the
   companion's handler calls ``probe:mark(i)`` (a host API), and the latency
   is the time from the start of ``emit`` to that call.
2. *attack*: the companion is stopped, the offenders are started, then the
   companion again (its handlers come after the offenders' in delivery
   order, so an offender's handler runs ahead of it), and the host emits
   again while the attack runs.
3. *cut-off*: an offender that moonbus stopped (``failed``) is left as it
   is; one still running is stopped by the host (bounded).
4. *after*: the same measurement once more.

Messages sent: ``phase`` (start of a phase), ``slow`` (an event over the
handler limit during the attack, at most ``MAX_SLOW_LINES``), ``result``
(every figure), ``closed`` (``Runtime.close`` returned). The process's
stderr (moonbus logs the offenders' errors there) goes to a file the parent
names, so it never mixes into the bench's table.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from moonbus.host.context import HostSettings
from moonbus.lua.exposure import lua_api
from moonbus.runtime import Runtime

COMPANION = 'events:on("ping", function(e) probe:mark(e.i) end)\n'
MAX_SLOW_LINES = 10
STOP_TIMEOUT = 10.0  # seconds the host gives an offender's stop


class Channel:
    """The pipe to the parent; used by the main thread only."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def say(self, kind: str, **fields: Any) -> None:
        """One message (sent at once: the parent may kill us next)."""
        self.conn.send({"kind": kind, **fields})


@lua_api
class Probe:
    """Host API the companion calls from its handler: when event ``i`` reached it.

    Records the wall clock and, when the handler runs on the emitting thread
    (immediate delivery, always the case for the companion's event-engine
    handler), that thread's CPU clock: the handler limit is CPU time of the
    handler's thread (``moonbus.lua.watchdog``), so the CPU latency is the
    offenders' cost in the limit's own clock. Written by whichever thread runs
    the handler, read by the main thread after the emit (a dict store is
    atomic under the GIL)."""

    def __init__(self) -> None:
        self.marks: dict[int, tuple[float, float, int]] = {}

    def mark(self, i: int) -> None:
        self.marks[int(i)] = (time.perf_counter(), time.thread_time(), threading.get_ident())


def stretch() -> float:
    """How much longer than its CPU time a CPU-bound piece of work takes on
    this machine now (wall / CPU of a 30 ms spin, median of three): the
    handler limit counts CPU time, the companion's latency is wall time."""
    ratios = []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.thread_time()
        while time.thread_time() - cpu < 0.03:
            pass
        ratios.append((time.perf_counter() - wall) / (time.thread_time() - cpu))
    return max(1.0, sorted(ratios)[1])


def rss_mib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process, MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Measure:
    """Emits ``ping`` events and pairs each with the companion's mark."""

    def __init__(self, rt: Runtime, probe: Probe, channel: Channel, *, stepped: bool,
                 limit: float) -> None:
        self.rt, self.probe, self.stepped, self.limit = rt, probe, stepped, limit
        self.say = channel.say
        self.next_i = 0
        self.slow_lines = 0

    def phase(self, name: str, events: int, seconds: float, pace: float,
              until: Any = None) -> dict[str, Any]:
        """Emit up to ``events`` pings (``pace`` s apart) within ``seconds``, or
        until ``until()`` is true; latencies and emit times in seconds."""
        self.say("phase", phase=name)
        latencies: list[float] = []
        cpu: list[float] = []  # CPU latency on the emitting thread
        emits: list[float] = []
        me = threading.get_ident()
        lost = 0
        end = time.perf_counter() + seconds
        for _ in range(events):
            if time.perf_counter() > end or (until is not None and until()):
                break
            i = self.next_i
            self.next_i += 1
            start, start_cpu = time.perf_counter(), time.thread_time()
            self.rt.bus.emit("ping", {"i": i})
            emits.append(time.perf_counter() - start)
            if self.stepped:
                self.rt.run_due()
            mark = self.probe.marks.pop(i, None)
            if mark is None:
                lost += 1
                continue
            latencies.append(mark[0] - start)
            if mark[2] == me:
                cpu.append(mark[1] - start_cpu)
            if latencies[-1] > self.limit and name == "attack" \
                    and self.slow_lines < MAX_SLOW_LINES:
                self.slow_lines += 1
                self.say("slow", seconds=latencies[-1])
            if pace:
                time.sleep(pace)
        return {"latencies": latencies, "cpu": cpu, "emits": emits, "lost": lost}


class Trigger:
    """A thread emitting the attack's trigger event in a loop (a cascade
    storm); records how long each of the host's emits took."""

    def __init__(self, rt: Runtime, event: str) -> None:
        self.rt, self.event = rt, event
        self.halt = threading.Event()
        self.durations: list[float] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="bench-trigger", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.halt.is_set():
            start = time.perf_counter()
            try:
                self.rt.bus.emit(self.event, {})
            except Exception as exc:  # reported in the result, not raised
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            self.durations.append(time.perf_counter() - start)
            time.sleep(0.01)

    def stop(self) -> bool:
        self.halt.set()
        self.thread.join(STOP_TIMEOUT)
        return not self.thread.is_alive()


def wait_for(check: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.005)
    return bool(check())


def outcome(host: Any) -> str:
    """How an offender ended (or that it still runs), for the row's note."""
    errors = list(host.errors)
    last = errors[-1].replace("\n", " ")[:160] if errors else ""
    return f"{host.status}" + (f" ({last})" if last else "")


def attack_main(spec: dict[str, Any], conn: Connection, stderr_path: str) -> None:
    """Entry point of the attack's process (see the module doc)."""
    with open(stderr_path, "w", encoding="utf-8") as err:
        os.dup2(err.fileno(), 2)
    channel = Channel(conn)
    say = channel.say
    settings = HostSettings(**spec.get("settings", {}))
    limit = settings.handler_timeout or 0.0
    stepped = not spec["threaded"]
    probe = Probe()
    rt = (Runtime(threaded=False, clock=lambda: 0.0, settings=settings) if stepped
          else Runtime(threaded=True, workers=2, settings=settings))
    rt.register_api("probe", probe)
    measure = Measure(rt, probe, channel, stepped=stepped, limit=limit)
    result: dict[str, Any] = {"limit": limit, "stretch": stretch()}
    companion = rt.load("companion.lua", text=COMPANION, name="companion")
    companion.start()
    # Alone and after: paced, spread over time (a burst of µs-long emits is
    # at the mercy of one time slice). The attack unpaced when it needs many events.
    pace = spec["pace"]
    result["alone"] = measure.phase("alone", spec["alone_events"], spec["seconds"], pace)
    companion.stop(timeout=STOP_TIMEOUT)

    rss_before = rss_mib("VmRSS")
    say("phase", phase="starting the offenders")
    offenders = [rt.load(f"offender{n}.lua", text=text, name=f"offender{n}")
                 for n, text in enumerate(spec["offenders"])]
    start_errors = []
    started = time.perf_counter()
    for host in offenders:
        try:
            host.start()
        except Exception as exc:  # a script refused at start is contained, not a crash
            start_errors.append(f"{type(exc).__name__}: {exc}"[:160])
    result["start_seconds"] = time.perf_counter() - started  # the host's thread was held
    companion.start()
    if spec["threaded"]:
        wait_for(lambda: all(h.status != "starting" for h in offenders), STOP_TIMEOUT)
        time.sleep(spec["warmup"])  # the attack in full swing before we measure
    trigger = Trigger(rt, spec["trigger"]) if spec.get("trigger") else None
    window_start = time.perf_counter()  # CLOCK_MONOTONIC: the parent's clock too
    stopper: threading.Thread | None = None
    if spec.get("stop_during_attack"):
        def stop_all() -> None:
            for host in offenders:
                host.stop(timeout=STOP_TIMEOUT)
        stopper = threading.Thread(target=stop_all, name="bench-stop", daemon=True)
        halfway = spec["attack_events"] // 2
        first = measure.phase("attack", halfway, spec["seconds"] / 2, pace)
        stop_started = time.perf_counter()
        stopper.start()
        rest = measure.phase("attack", spec["attack_events"] - halfway, spec["seconds"] / 2,
                             pace, until=lambda: not stopper.is_alive())
        stopper.join(STOP_TIMEOUT)
        result["stop_seconds"] = time.perf_counter() - stop_started
        attack = {k: first[k] + rest[k] for k in first}
    else:
        attack = measure.phase("attack", spec["attack_events"], spec["seconds"],
                               0.0 if spec["unpaced"] else pace)
    result["attack"] = attack
    result["window"] = (window_start, time.perf_counter())
    if trigger is not None:
        result["trigger_stopped"] = trigger.stop()
        result["trigger_emit_max"] = max(trigger.durations, default=0.0)
        result["trigger_emits"] = len(trigger.durations)
        result["trigger_errors"] = trigger.errors[:1]
    # An offender moonbus cuts off asynchronously (on its script thread) gets
    # ``settle`` seconds to end before the host stops it.
    wait_for(lambda: all(h.status in ("failed", "stopped") for h in offenders), spec["settle"])
    result["outcome"] = [outcome(h) for h in offenders]
    result["start_errors"] = start_errors
    cut = []
    for host in offenders:
        if host.status in ("failed", "stopped"):
            cut.append(f"{host.status} by moonbus")
            continue
        host.stop(timeout=STOP_TIMEOUT)
        ended = host.status in ("failed", "stopped")
        cut.append("stopped by the host" if ended else f"still {host.status} after stop()")
    result["cut"] = cut
    result["stretch"] = max(result["stretch"], stretch())  # the load may have changed
    result["rss_before"] = rss_before
    result["rss_peak"] = rss_mib("VmHWM")
    result["after"] = measure.phase("after", spec["after_events"], spec["seconds"], pace)
    result["companion"] = companion.status
    say("result", **result)
    start = time.perf_counter()
    rt.close()
    say("closed", seconds=time.perf_counter() - start)

