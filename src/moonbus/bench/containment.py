"""Containment (SPEC §4b): what each attack costs a well-behaved companion script.

One row per attack kind. Each attack runs in a process of its own
(``_containment_child``) beside a companion whose handler calls a host API
probe; the host emits ``ping`` events and the latency is the time from the
start of ``emit`` to that call. Measured in one run and one process: the
companion alone, then while the attack runs (the offender's handlers come
first in delivery order, so the companion waits behind them), then after the
offender was cut off by moonbus (stopped as ``failed``) or, if it still runs,
stopped by the host.

The row's value is the companion's p99 latency during the attack; the peer is
the companion alone (p99), so the ratio (alone / attack) shows the slowdown.
``ok`` is the acceptance of the containment issue, checked as numbers:

* no event during the attack waits more than one handler limit (100 ms by
  default) plus ``LIMIT_SLACK`` for the abort itself (the watchdog checks
  every 2 ms and an aborted handler still unwinds: a companion queued behind
  an offender that runs to its limit waits the limit plus that); no event is
  lost. The limit counts CPU time of the handler's thread, the latency is
  wall time, and on a loaded machine a 100 ms CPU handler takes longer on
  the wall: so the check is made twice, on the emitting thread's CPU time
  from ``emit`` to the companion (the limit's own clock) and on the wall
  latency against the limit times the machine's stretch (wall/CPU of a
  CPU-bound spin: in the attack's process before and after, and sampled by
  this process, which shares no GIL with it, every 100 ms while the attack
  runs, their median; 1.0 on an idle machine, where the check is the
  plain acceptance). Waiting for a lock or the GIL shows on the wall and not
  in CPU time, which is why both are checked;
* after the cut-off, the companion's p50 is within 2x its p50 alone;
* the process's peak RSS (``VmHWM``) stays under 1 GiB;
* the host's calls return and ``Runtime.close`` returns.

An attack that is not contained may hang the host or eat memory: the parent
kills its process at a wall-clock bound (or at ``RSS_KILL_MIB``) and reports
the row as NOT CONTAINED with what it saw (``ok`` False). The processes are
forked from a ``multiprocessing`` forkserver that has imported the attack
runner (start-up in milliseconds); as with any ``multiprocessing`` user, a
script that calls ``run`` directly guards its entry point with
``if __name__ == "__main__"`` (``moonbus bench`` does). Threads: ``run`` and
``measure_attack`` run on the caller's thread (a quick run measures two
attacks at a time on two pool threads, each owning its own child and pipe).
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from moonbus.bench._containment_child import attack_main
from moonbus.bench.harness import MISSED, BenchRow

__all__ = ["ATTACKS", "Attack", "Outcome", "bound_for", "measure_attack", "row_for", "run"]

AREA = "containment"
LIMIT_SLACK = 0.2  # of the handler limit: the abort's granularity (see the module doc)
AFTER_RATIO = 2.0  # after the cut-off, p50 within this factor of the p50 alone
RSS_LIMIT_MIB = 1024.0
SAMPLE_EVERY = 0.1  # seconds between the parent's load samples
RSS_KILL_MIB = 2048.0  # the parent kills an attack's process past this (a shared machine)
TARGET = "max <= 1 handler limit/event; after cut-off p50 <= 2x alone; RSS < 1 GiB"

PATHOLOGICAL = """
local function patho()  -- 160 nested functions x 199 locals, then 900,000 x=x
  local names = {}
  for i = 1, 199 do names[i] = "a" .. i end
  local head = ("local function f() local " .. table.concat(names, ",") .. " "):rep(160)
  return head .. ("x=x "):rep(900000) .. ("end "):rep(160)
end
events:on("ping", function() local f, err = load(patho()) end)
"""


@dataclass(frozen=True)
class Attack:
    """One hostile kind: its offender scripts and how it is driven.

    ``threaded``: a runtime with scheduler threads (attacks in ``poll`` or in
    main-engine handlers run beside the host's emits); otherwise stepped
    (``run_due`` after each emit; event-engine handlers run inside ``emit``).
    ``trigger``: an event a helper thread emits in a loop during the attack.
    ``unpaced``: the host emits back to back (an overflow needs many events).
    ``stop_during_attack``: the host stops the offenders half-way through the
    attack (stop is part of it). ``settings``: HostSettings overrides.
    """

    name: str
    offenders: tuple[str, ...]
    threaded: bool
    expect: str
    trigger: str | None = None
    unpaced: bool = False
    stop_during_attack: bool = False
    events: int | None = None  # attack events, when the attack needs a given number
    settle: float = 0.0  # seconds the offender gets to be cut off after the attack
    quick_events: int | None = None  # ``events`` in a quick run
    quick_settings: dict[str, float] = field(default_factory=dict)  # added in a quick run
    settings: dict[str, float] = field(default_factory=dict)


ATTACKS: tuple[Attack, ...] = (
    Attack("log flood", (
        'local s = string.rep("x", 512 * 1024)\n'
        "function poll() for i = 1, 20 do logger.info(s) end return 0 end",
    ), threaded=True, expect="lines cut to max_log_line"),
    Attack("stats flood", (
        'local big = string.rep("v", 1024 * 1024)\n'
        "function poll()\n"
        '  for i = 1, 300 do pcall(stats.set, "big" .. i, big .. i) end\n'
        '  for i = 1, 300 do pcall(stats.set, "k" .. i, i) end\n'
        "  return 0\nend",
    ), threaded=True, expect="refused at max_stats_keys / max_stats_value"),
    Attack("sleeping main-engine * handler", (
        'function on_start() events:on("*", function(e) sleep(1000000) end) end',
    ), threaded=True, unpaced=True, events=10_100, settle=5.0, quick_events=1_100,
        quick_settings={"max_deferred_events": 1_000},
        expect="failed at max_deferred_events"),
    Attack("oversized emits", (
        'local big = string.rep("z", 1024 * 1024)\n'
        'function poll() for i = 1, 50 do pcall(events.emit, "big", { s = big .. i }) end '
        "return 0 end",
    ), threaded=True, expect="refused at max_emit_size"),
    Attack("runaway poll loop, pcall(sleep) + stop", (
        "function poll() while true do pcall(sleep, 5) "
        "local t = os.clock() while os.clock() - t < 0.005 do end end end",
    ), threaded=True, stop_during_attack=True, expect="stop wins: failed"),
    Attack("math.huge / NaN poll delays", (
        *("function poll() return math.huge end",) * 5,
        "function poll() return 1e300 end",
        "function poll() sleep(1e13) end",
        "function poll() return -5 end",
        "function poll() return 0/0 end",
        "function poll() sleep(0/0) end",
    ), threaded=True, expect="clamped or refused; workers live"),
    Attack("sleep-marker leak", ("""
function poll()
  local co = coroutine.create(function() sleep(5) end)
  local marker
  string.gsub("a", "a", function() local ok, m = coroutine.resume(co) marker = m end)
  coroutine.yield(marker, "abc")
end""",), threaded=True, expect="script error; failed after max_poll_failures"),
    Attack("cascade storm", (
        'events:on("go", function(e) events:emit("go", {}) events:emit("go", {}) end)',
    ), threaded=False, trigger="go", expect="cut at max_cascade_events"),
    Attack("50 runaway handlers on one event", (
        'for i = 1, 50 do events:on("ping", function(e) while true do end end) end',
    ), threaded=False, expect="one budget per event; quarantined"),
    Attack("200,000 wildcard handlers", (
        'for i = 1, 200000 do events:on("*", function(e) end) end',
    ), threaded=False, expect="refused at max_handlers_per_script: fails to start"),
    Attack("200,000 wildcard handlers, refusals caught by pcall", (
        'for i = 1, 200000 do pcall(events.on, "*", function(e) end) end',
    ), threaded=False, expect="capped at max_handlers_per_script; start bounded"),
    Attack("pathological load() in a handler", (PATHOLOGICAL,), threaded=False,
           expect="compile cut at the handler limit"),
)


@dataclass
class Outcome:
    """What the parent learnt about one attack (``result`` is the child's)."""

    result: dict[str, Any] | None = None
    closed: bool = False
    phase: str = "start"
    slow: list[float] = field(default_factory=list)
    killed: str = ""  # why the parent killed the child, if it did
    returncode: int | None = None
    stderr: str = ""
    peak_rss_mib: float = 0.0  # as the parent saw it from /proc
    # (perf_counter, wall/CPU of a 2 ms spin of the parent's thread) while the child runs
    stretch_samples: list[tuple[float, float]] = field(default_factory=list)
    seconds: float = 0.0


def _spec(attack: Attack, quick: bool) -> dict[str, Any]:
    spec = asdict(attack)
    events = (attack.quick_events if quick else None) or attack.events
    spec.update(
        alone_events=60 if quick else 400,
        attack_events=events or (120 if quick else 800),
        after_events=60 if quick else 400,
        seconds=(1.0 if quick else 4.0) * (3 if events else 1),  # per phase, at most
        pace=0.001,
        warmup=0.05 if quick else 0.2,
        settings={**attack.settings, **(attack.quick_settings if quick else {})},
    )
    return spec


def bound_for(attack: Attack, quick: bool) -> float:
    """Wall-clock seconds an attack's process gets (start-up included): a few
    times what a contained attack needs on a busy machine."""
    return (4.0 if quick else 15.0) + attack.settle + (5.0 if attack.events else 0.0)


def _child_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_attack(attack: Attack, quick: bool, bound: float) -> Outcome:
    """Run one attack in its own process, killed at ``bound`` seconds or at
    ``RSS_KILL_MIB``; runs on the caller's thread."""
    context = multiprocessing.get_context("forkserver")
    # "__main__" too: else every child would run the caller's main script
    # again to set up (a console script imports the whole CLI).
    context.set_forkserver_preload(["__main__", attack_main.__module__])
    outcome = Outcome()
    with tempfile.NamedTemporaryFile("r", encoding="utf-8", suffix=".log") as stderr:
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=attack_main, args=(_spec(attack, quick), send, stderr.name),
                                name=f"moonbus-bench-{attack.name}", daemon=True)
        start = time.monotonic()
        child.start()
        send.close()
        next_sample = 0.0
        while child.is_alive():
            _receive(receive, outcome)
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + SAMPLE_EVERY
                outcome.stretch_samples.append((time.perf_counter(), _spin_stretch()))
            if child.pid is not None:
                outcome.peak_rss_mib = max(outcome.peak_rss_mib, _child_rss_mib(child.pid))
            if outcome.peak_rss_mib > RSS_KILL_MIB:
                outcome.killed = f"RSS passed {RSS_KILL_MIB:,.0f} MiB"
            elif time.monotonic() - start > bound:
                outcome.killed = f"no end within {bound:.0f} s"
            if outcome.killed:
                child.kill()
                break
        child.join()
        _receive(receive, outcome)
        receive.close()
        outcome.seconds = time.monotonic() - start
        outcome.returncode = child.exitcode
        outcome.stderr = stderr.read()[-2000:].strip()
    return outcome


def _spin_stretch(cpu_seconds: float = 0.002) -> float:
    """Wall / CPU time of a short CPU-bound spin on this thread: how much this
    machine stretches CPU-bound work right now (1.0 when idle)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.thread_time() - cpu < cpu_seconds:
        pass
    return max(1.0, (time.perf_counter() - wall) / (time.thread_time() - cpu))


def _machine_stretch(result: dict[str, Any], outcome: Outcome) -> float:
    """The stretch the wall check allows: the child's own calibration, or the
    median of the parent's samples during the attack, the larger (a median:
    one preempted 2 ms spin must not excuse a long wait)."""
    start, end = result.get("window", (0.0, 0.0))
    during = [ratio for at, ratio in outcome.stretch_samples if start <= at <= end]
    return max(float(result["stretch"]), _p(during, 0.5) if during else 1.0)


def _receive(receive: Connection, outcome: Outcome) -> None:
    """Take the child's messages that arrived (waits up to 20 ms for one)."""
    try:
        while receive.poll(0.02):
            message = receive.recv()
            kind = message.pop("kind", "")
            if kind == "phase":
                outcome.phase = message["phase"]
            elif kind == "slow":
                outcome.slow.append(message["seconds"])
            elif kind == "result":
                outcome.result = message
            elif kind == "closed":
                outcome.closed = True
    except (EOFError, OSError):  # the child ended (or was killed) mid-message
        pass


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _uncontained(attack: Attack, outcome: Outcome, why: str) -> BenchRow:
    seen = f"; slowest event seen {max(outcome.slow) * 1e3:,.0f} ms" if outcome.slow else ""
    tail = outcome.stderr.splitlines()[-1][:160] if outcome.stderr else ""
    return BenchRow(
        AREA, attack.name, float("nan"), "us p99",
        target=TARGET, peer="companion alone", ok=False,
        note=f"{MISSED}{why} (phase {outcome.phase}){seen}"
        + f"; peak RSS {outcome.peak_rss_mib:,.0f} MiB"
        + (f"; child: {tail}" if tail and not outcome.killed else "")
        + f"; expected: {attack.expect}",
    )


def row_for(attack: Attack, outcome: Outcome) -> BenchRow:
    """The row for one attack: figures when the child finished, else NOT CONTAINED."""
    result = outcome.result
    if result is None:
        why = outcome.killed or f"the process ended with code {outcome.returncode}"
        return _uncontained(attack, outcome, why)
    limit, stretch = float(result["limit"]), _machine_stretch(result, outcome)
    alone, attack_lat = result["alone"]["latencies"], result["attack"]["latencies"]
    after = result["after"]["latencies"]
    p50_alone, p99_alone = _p(alone, 0.5), _p(alone, 0.99)
    p50_attack, p99_attack = _p(attack_lat, 0.5), _p(attack_lat, 0.99)
    worst = max(attack_lat, default=float("nan"))
    p50_after = _p(after, 0.5)
    after_ratio = p50_after / p50_alone if p50_alone else float("inf")
    peak = max(float(result["rss_peak"]), outcome.peak_rss_mib)
    lost = result["attack"]["lost"] + result["after"]["lost"]
    cpu_worst = max(result["attack"]["cpu"], default=0.0)
    allowed = limit * (1 + LIMIT_SLACK)
    failures = []
    if not limit:
        failures.append("no handler limit set")
    elif not attack_lat:
        failures.append("no event reached the companion during the attack")
    elif not cpu_worst <= allowed:
        failures.append(f"an event cost {cpu_worst * 1e3:,.0f} ms CPU > the "
                        f"{limit * 1e3:.0f} ms limit")
    elif not worst <= allowed * stretch:
        failures.append(f"an event waited {worst * 1e3:,.0f} ms > the {limit * 1e3:.0f} ms "
                        f"limit (x{stretch:.1f} machine load)")
    if lost:
        failures.append(f"{lost} events lost")
    if not after_ratio <= AFTER_RATIO:
        failures.append(f"after the cut-off p50 {after_ratio:.1f}x alone")
    if not peak < RSS_LIMIT_MIB:
        failures.append(f"peak RSS {peak:,.0f} MiB")
    if result["companion"] != "running":
        failures.append(f"companion {result['companion']}")
    if outcome.killed or not outcome.closed:
        failures.append("Runtime.close() did not return" if not outcome.killed
                        else outcome.killed + " after the figures")
    if any(c.startswith("still") for c in result["cut"]):
        failures.append("an offender did not end when stopped")
    if result.get("trigger_stopped") is False:
        failures.append("the trigger's emit did not return")
    facts = [
        f"p50 {p50_attack * 1e6:,.0f} us vs {p50_alone * 1e6:,.0f} us alone",
        f"max {worst * 1e3:,.1f} ms/event, {cpu_worst * 1e3:,.1f} ms CPU "
        f"(limit {limit * 1e3:.0f} ms CPU; machine load x{stretch:.1f})",
        f"{len(attack_lat)} events",
        f"host emit p99 {_p(result['attack']['emits'], 0.99) * 1e6:,.0f} us",
        f"after cut-off p50 {p50_after * 1e6:,.0f} us = {after_ratio:.2f}x alone",
        f"peak RSS {peak:,.0f} MiB (+{peak - float(result['rss_before']):,.0f})",
        "offender " + "; ".join(sorted(set(result["cut"]))),
    ]
    if "trigger_emit_max" in result:
        facts.append(f"{result['trigger_emits']} trigger emits, slowest "
                     f"{result['trigger_emit_max'] * 1e3:,.0f} ms")
    if "stop_seconds" in result:
        facts.append(f"stop took {result['stop_seconds']:.2f} s")
    if result.get("start_seconds", 0.0) > limit:
        facts.append(f"starting the offenders held the host {result['start_seconds']:.1f} s")
    if result["start_errors"]:
        facts.append(f"refused at start: {result['start_errors'][0][:100]}")
    note = "; ".join(facts)
    if failures:
        note = MISSED + ", ".join(failures) + "; " + note
    return BenchRow(
        AREA, attack.name, p99_attack * 1e6, "us p99", target=TARGET,
        peer="companion alone", peer_value=p99_alone * 1e6,
        ratio=p99_alone / p99_attack if p99_attack else None, ok=not failures, note=note,
    )


def run(quick: bool) -> list[BenchRow]:
    """One row per attack, each in its own process: one after the other (the
    figures), or four at a time in a quick run (a smoke test: the CPU check
    is per thread and the wall check scales with the measured load)."""
    with ThreadPoolExecutor(2 if quick else 1) as pool:
        outcomes = list(pool.map(lambda a: measure_attack(a, quick, bound_for(a, quick)),
                                 ATTACKS))
    return [row_for(attack, outcome) for attack, outcome in zip(ATTACKS, outcomes, strict=True)]
