"""Benchmark: replaying a recording, in events per second and against the real-time run.

A script emits ten events per tick from a ``tick`` handler, each with an
answer of the demo world's API; the run is recorded in virtual time with a
50 ms tick (what ``moonbus run --tick-ms 50`` would take in real time:
ticks x 50 ms), then replayed from the file. Rows: the replay's events per
second beside the recorded run's own (virtual time, recording on: the
replay should not be much slower than the run it checks), and how many times
faster than that real-time run the replay is (target: at least 5x, for a
recording of about 100,000 events in the full suite). Runs on the calling
thread; files in a temp dir.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from moonbus.app import load_app
from moonbus.bench.harness import BenchRow
from moonbus.replay.replayer import replay
from moonbus.session.plan import plan_scripts
from moonbus.session.session import Session

__all__ = ["run"]

AREA = "replay"
TICK_SECONDS = 0.05
SCRIPT = """
events.on("tick", function(e)
  local me = players:local_player()
  local x = me:x()
  for i = 1, 10 do events.emit("bench", {i = i, tick = e.tick, x = x}) end
end)
"""


def _record(folder: Path, ticks: int) -> Path:
    script = folder / "emitter.lua"
    script.write_text(SCRIPT, "utf-8")
    out = folder / "bench.mbrec"
    session = Session(plan_scripts((str(script),), ()), seed=1, app=load_app(None),
                      virtual=True, tick_seconds=TICK_SECONDS, record=out)
    try:
        session.start()
        try:
            session.run_virtual(ticks, threading.Event())
        finally:
            session.stop_scripts()
    finally:
        session.close()
    return out


def run(quick: bool) -> list[BenchRow]:
    ticks = 400 if quick else 8_400  # about 12 events a tick: 100,000 in the full suite
    with tempfile.TemporaryDirectory(prefix="moonbus-bench-replay-") as folder:
        started = time.perf_counter()
        path = _record(Path(folder), ticks)
        recorded = time.perf_counter() - started
        result = replay(path)
    events = result.counts.get("events", 0)
    rate = result.events_per_second()
    record_rate = events / recorded if recorded > 0 else 0.0
    ratio = rate / record_rate if record_rate > 0 else 0.0
    real_time = ticks * TICK_SECONDS
    speedup = real_time / result.seconds if result.seconds > 0 else 0.0
    note = f"{events:,} events, {ticks:,} ticks; " + (
        "identical" if result.identical else "DIVERGED")
    return [
        BenchRow(AREA, "replay", rate, "events/s", ">= 5,000 events/s, >= 0.5x the run",
                 peer="the recorded run", peer_value=record_rate, ratio=ratio,
                 ok=rate >= 5_000 and ratio >= 0.5 and result.identical, note=note),
        BenchRow(AREA, "replay vs the --tick-ms 50 run", speedup, "x faster", ">= 5x",
                 ok=speedup >= 5 and result.identical,
                 note=f"real time {real_time:.0f} s, replay {result.seconds:.2f} s"),
    ]
