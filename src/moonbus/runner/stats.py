"""Counters and latency percentiles for the runner.

Why per-worker counters: a tiny job costs a few microseconds, so the hot path
takes no shared lock for bookkeeping. Each worker writes only its own
``WorkerStats`` (single writer, read by anyone as a racy but never torn
snapshot: ints and a list copied in one C call); the few counters written by
submitting threads live in ``SubmitStats`` under a lock (accepted and rejected
submits are counted by the job queue, under its own lock).

Why a sliding window: a game wants to know how the runner behaves *now*, and
memory must stay bounded however long the game runs, so each worker keeps the
latencies (submit → settle, queue wait included) of its most recent
``window`` jobs in a ring buffer; percentiles are computed on demand.

Outcomes are disjoint: every job that was accepted ends as exactly one of
done, failed, timed_out, out_of_memory or cancelled.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from moonbus.lua.compile_limits import CompileStatistics

__all__ = [
    "DEFAULT_WINDOW",
    "Outcome",
    "RunnerStatistics",
    "SubmitStats",
    "WorkerStats",
    "percentile",
    "summarize",
]

DEFAULT_WINDOW = 4096


class Outcome(enum.IntEnum):
    DONE = 0
    FAILED = 1
    TIMED_OUT = 2
    OUT_OF_MEMORY = 3
    CANCELLED = 4


@dataclass(frozen=True)
class RunnerStatistics:
    """A snapshot of one runner. Latencies are seconds (None before any job ran).

    ``failed`` counts errors other than timeouts, memory and cancellation
    (script errors, syntax errors, bad arguments or results); ``rejected``
    counts submits refused with ``RunnerBusyError``. ``compiles_timed_out``
    and ``sources_refused`` count job sources (or ``load`` in jobs) whose
    compile ran past the time limit or that were over ``max_source_bytes``;
    those jobs are also counted in their outcome (failed or timed out).
    """

    workers: int
    submitted: int
    done: int
    failed: int
    timed_out: int
    out_of_memory: int
    cancelled: int
    rejected: int
    queue_depth: int
    busy_workers: int
    pending_actions: int
    states: int
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    compiles_timed_out: int = 0
    sources_refused: int = 0


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class WorkerStats:
    """Counters of one worker: written only by its thread, read by any."""

    __slots__ = ("_next", "_ring", "_window", "busy", "counts")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.busy = False
        self.counts = [0] * len(Outcome)
        self._ring: list[float] = []
        self._window = window
        self._next = 0

    def record(self, outcome: Outcome, latency: float) -> None:
        """A job this worker ran ended (worker thread only)."""
        self.counts[outcome] += 1
        if len(self._ring) < self._window:
            self._ring.append(latency)
        else:
            self._ring[self._next] = latency
            self._next = (self._next + 1) % self._window

    def latencies(self) -> list[float]:
        """A copy of the recent latencies (any thread)."""
        return self._ring[:]


class SubmitStats:
    """Outcomes of jobs that never reached a worker (any thread, locked)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = [0] * len(Outcome)

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            self.counts[outcome] += 1


def summarize(
    *,
    workers: Sequence[WorkerStats],
    submit: SubmitStats,
    submitted: int,
    rejected: int,
    queue_depth: int,
    pending_actions: int,
    states: int,
    compiles: CompileStatistics | None = None,
) -> RunnerStatistics:
    """Add the per-worker and submit-side counters into one snapshot."""
    compiles = compiles or CompileStatistics()
    counts = list(submit.counts)
    latencies: list[float] = []
    for stats in workers:
        for outcome, count in enumerate(stats.counts[:]):
            counts[outcome] += count
        latencies.extend(stats.latencies())
    latencies.sort()
    return RunnerStatistics(
        workers=len(workers),
        submitted=submitted,
        done=counts[Outcome.DONE],
        failed=counts[Outcome.FAILED],
        timed_out=counts[Outcome.TIMED_OUT],
        out_of_memory=counts[Outcome.OUT_OF_MEMORY],
        cancelled=counts[Outcome.CANCELLED],
        rejected=rejected,
        queue_depth=queue_depth,
        busy_workers=_count_busy(workers),
        pending_actions=pending_actions,
        states=states,
        latency_p50=percentile(latencies, 0.50),
        latency_p95=percentile(latencies, 0.95),
        latency_p99=percentile(latencies, 0.99),
        compiles_timed_out=compiles.compiles_timed_out,
        sources_refused=compiles.sources_refused,
    )


def _count_busy(workers: Iterable[WorkerStats]) -> int:
    return sum(1 for stats in workers if stats.busy)
