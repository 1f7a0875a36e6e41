"""Benchmark: the script runner (issue 4's four rows).

* **20,000 tiny jobs** (``return 1 + ...``): ``Runner(workers=2)`` (which runs
  them in batches, each job in its own fresh sandboxed environment with its
  own limits: see ``moonbus.runner.batch``) against a
  ``ThreadPoolExecutor(2)`` that makes a fresh ``lupa.lua54.LuaRuntime()`` per
  job and ``execute``s the same source with the same argument (the obvious way
  to run untrusted snippets without a pool). The peer's runtime is *not*
  sandboxed and has no limits, so it is cheaper per state than ours would be.
  Both sides submit every job first and then wait for all of them; the runner
  gets a queue as large as the batch, like the executor's unbounded one. The
  note gives the same executor running a no-op Python function: the price of
  one future and one thread hand-off, a ceiling for any future-per-job design.
  The peer is the only code in moonbus that calls ``LuaRuntime`` directly, on
  purpose: it *is* the thing we compare with.
* **CPU-bound jobs, 2 workers vs 1**: the same batch of Lua loops on one and
  on two workers (lupa releases the GIL while Lua runs). Only meaningful when
  the machine has two free cores.
* **timeout precision**: idle runner, a job that loops forever with a 50 ms
  limit; the figure is settle time minus submit time minus the limit, i.e. an
  upper bound on how late the abort came (it includes dispatch).
* **cancel of a running job**: time for ``future.cancel()`` to return on a job
  spinning in Lua; ``cancel()`` returns only once the worker has unwound the
  call and the future is settled, so this is also the time to settle.

Rounds are interleaved and the best round of each side is kept, so a noisy
moment hurts both alike.
"""

from __future__ import annotations

import concurrent.futures as cf
import statistics
import time
from typing import Any

from moonbus.bench.harness import BenchRow, ratio_row
from moonbus.runner import Runner
from moonbus.runner.future import Phase

__all__ = ["run"]

AREA = "runner"
TINY = "return 1 + ..."
CPU = "local n = ... local x = 0 for i = 1, n do x = x + i % 7 end return x"
SPIN = "while true do end"


def _fresh_runtime_job(value: int) -> Any:
    import lupa.lua54

    return lupa.lua54.LuaRuntime().execute(TINY, value)


def _peer_tiny(jobs: int) -> float:
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        start = time.perf_counter()
        futures = [pool.submit(_fresh_runtime_job, i) for i in range(jobs)]
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - start
    if results[-1] != jobs:
        raise AssertionError("peer computed a wrong result")
    return elapsed


def _noop(value: int) -> int:
    return value + 1


def _executor_ceiling(jobs: int) -> float:
    """The same executor running a no-op Python function: the cost of a future alone."""
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        start = time.perf_counter()
        futures = [pool.submit(_noop, i) for i in range(jobs)]
        for f in futures:
            f.result()
        return time.perf_counter() - start


def _ours_tiny(runner: Runner, jobs: int) -> float:
    start = time.perf_counter()
    futures = [runner.submit(TINY, (i,)) for i in range(jobs)]
    results = [f.result() for f in futures]
    elapsed = time.perf_counter() - start
    if results[-1] != jobs:
        raise AssertionError("runner computed a wrong result")
    return elapsed


def tiny_jobs(jobs: int, rounds: int) -> BenchRow:
    """Row 1: throughput of tiny jobs against fresh runtimes in a thread pool."""
    with Runner(workers=2, queue_size=jobs) as runner:
        _ours_tiny(runner, min(jobs, 500))  # warm up: chunk cache, engines
        ours, theirs, ceiling = [], [], []
        for _ in range(rounds):
            theirs.append(_peer_tiny(jobs))
            ours.append(_ours_tiny(runner, jobs))
            ceiling.append(_executor_ceiling(jobs))
    return ratio_row(
        AREA,
        f"{jobs:,} tiny jobs (return 1 + ...)",
        ours=jobs / min(ours),
        peer="ThreadPoolExecutor(2) + fresh LuaRuntime per job",
        theirs=jobs / min(theirs),
        unit="jobs/s",
        higher_is_better=True,
        min_ratio=3.0,
        target=">= 3x",
        note=f"best of {rounds}; 2 workers; sandboxed env per job; the same executor running "
        f"a no-op Python function does {jobs / min(ceiling):,.0f} jobs/s",
    )


def _cpu_batch(runner: Runner, jobs: int, loops: int) -> float:
    start = time.perf_counter()
    futures = [runner.submit(CPU, (loops,), timeout=60) for _ in range(jobs)]
    for f in futures:
        f.result()
    return time.perf_counter() - start


def cpu_scaling(jobs: int, loops: int, rounds: int) -> BenchRow:
    """Row 2: the same CPU-bound batch on two workers and on one."""
    with Runner(workers=1) as one, Runner(workers=2) as two:
        _cpu_batch(one, 2, loops)
        _cpu_batch(two, 2, loops)
        t1, t2 = [], []
        for _ in range(rounds):
            t1.append(_cpu_batch(one, jobs, loops))
            t2.append(_cpu_batch(two, jobs, loops))
    return ratio_row(
        AREA,
        "CPU-bound jobs, 2 workers vs 1",
        ours=jobs / min(t2),
        peer="same runner, 1 worker",
        theirs=jobs / min(t1),
        unit="jobs/s",
        higher_is_better=True,
        min_ratio=1.8,
        target=">= 1.8x (needs 2 free cores)",
        note=f"{jobs} jobs x {loops:,} Lua loop steps; best of {rounds}",
    )


def timeout_precision(samples: int, limit: float = 0.05) -> BenchRow:
    """Row 3: how late after its deadline a runaway job is aborted."""
    lateness: list[float] = []
    with Runner(workers=1) as runner:
        runner.submit("return 1").result()
        for _ in range(samples):
            settled: list[float] = []

            def stamp(_: object, into: list[float] = settled) -> None:
                into.append(time.perf_counter())

            start = time.perf_counter()
            future = runner.submit(SPIN, timeout=limit, callback=stamp)
            future.exception()
            lateness.append((settled[0] - start - limit) * 1000)
    worst = max(lateness)
    return BenchRow(
        area=AREA,
        name="timeout precision",
        value=worst,
        unit="ms late (max)",
        target="<= 20 ms",
        ok=worst <= 20.0,
        note=f"p50 {statistics.median(lateness):.2f} ms over {samples} jobs, {limit * 1000:.0f} ms"
        " limit; includes dispatch",
    )


def cancel_latency(samples: int) -> BenchRow:
    """Row 4: time for cancel() of a running job to return with the future settled."""
    times: list[float] = []
    with Runner(workers=1) as runner:
        for _ in range(samples):
            future = runner.submit(SPIN, timeout=30)
            deadline = time.monotonic() + 10
            while future.phase is not Phase.IN_LUA:
                if time.monotonic() > deadline:
                    raise AssertionError("job never started")
                time.sleep(0.0005)
            start = time.perf_counter()
            cancelled = future.cancel()
            times.append((time.perf_counter() - start) * 1000)
            if not (cancelled and future.cancelled()):
                raise AssertionError("cancel() did not cancel the running job")
    worst = max(times)
    return BenchRow(
        area=AREA,
        name="cancel of a running job",
        value=worst,
        unit="ms (max)",
        target="<= 20 ms",
        ok=worst <= 20.0,
        note=f"p50 {statistics.median(times):.3f} ms over {samples} cancels",
    )


def run(quick: bool) -> list[BenchRow]:
    """All rows; ``quick`` shrinks every workload to a fraction of a second."""
    if quick:
        return [
            tiny_jobs(jobs=300, rounds=1),
            cpu_scaling(jobs=4, loops=20_000, rounds=1),
            timeout_precision(samples=3, limit=0.02),
            cancel_latency(samples=3),
        ]
    return [
        tiny_jobs(jobs=20_000, rounds=3),
        cpu_scaling(jobs=8, loops=3_000_000, rounds=3),
        timeout_precision(samples=20),
        cancel_latency(samples=30),
    ]
