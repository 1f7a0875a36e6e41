"""How late a script's polls ran: the time from a poll's due time to its start.

Why: a poll is due at a time the script chose (``return 100``, SPEC §10),
but it runs when the scheduler gets to it: when the script thread (or the
host's ``run_due``) is busy with other scripts, deferred handlers or a
slow frame, every poll starts late. Operators want that lateness as a
distribution per script (``/metrics``: ``moonbus_script_poll_latency_seconds``,
a Prometheus histogram), not just a poll count.

Measured where polls are scheduled (``ScriptLifecycle._run_lifecycle``):
the scheduler's ``now`` for the slice minus the poll's deadline, taken once
per poll that starts (not per resume after a ``sleep``). Cheap: one bucket
search in a 12-entry tuple and three adds per poll.

Threads: ``record`` runs on the thread running the script's slice (one at
a time per script, under its control lock); ``snapshot`` from any thread
copies the counts (a scrape racing a poll may see the count one poll
ahead of the buckets, never a torn number: list item stores are atomic
under the GIL).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["POLL_LATENCY_BUCKETS", "PollLatency", "PollLatencyStatistics"]

# Upper bounds (seconds) of the histogram buckets, the last is +Inf implied.
# From 1 ms (a frame's jitter) to 5 s (a script thread held up badly).
POLL_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


@dataclass(frozen=True)
class PollLatencyStatistics:
    """A copy of one script's poll lateness: ``buckets`` are (upper bound,
    polls at most that late) pairs, cumulative as Prometheus wants them, the
    last bound ``inf``; ``count`` polls, ``total`` seconds late in all,
    ``worst`` the latest one."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total: float
    worst: float

    @property
    def mean(self) -> float:
        """Average lateness in seconds (0.0 before the first poll)."""
        return self.total / self.count if self.count else 0.0


class PollLatency:
    """The poll lateness counters of one script (see the module docstring)."""

    __slots__ = ("_counts", "_total", "_worst")

    def __init__(self) -> None:
        self._counts = [0] * (len(POLL_LATENCY_BUCKETS) + 1)  # per bucket, not cumulative
        self._total = 0.0
        self._worst = 0.0

    def record(self, late: float) -> None:
        """A poll due ``late`` seconds ago starts now (negative counts as 0)."""
        if late < 0.0:
            late = 0.0
        self._counts[bisect_left(POLL_LATENCY_BUCKETS, late)] += 1
        self._total += late
        if late > self._worst:
            self._worst = late

    def snapshot(self) -> PollLatencyStatistics:
        """The counters now, with cumulative buckets."""
        counts = list(self._counts)
        running = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*POLL_LATENCY_BUCKETS, float("inf")), counts, strict=True):
            running += count
            buckets.append((bound, running))
        return PollLatencyStatistics(buckets=tuple(buckets), count=running,
                                     total=self._total, worst=self._worst)
