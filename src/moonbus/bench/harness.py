"""Shared pieces for ``moonbus bench``: the result row and timing helpers.

Every row is measured side by side with its peer in the same process and run,
and reported as a ratio, so the numbers compare like with like on whatever
machine runs them. Targets are printed next to the figures; they are never
asserted in unit tests.

A suite is a module in ``moonbus.bench`` with ``run(quick: bool) -> list[BenchRow]``;
``quick`` shrinks the workload (used by the tests that check the suite runs).

Peers that are not moonbus dependencies (blinker, pyee, redis: the ``dev``
extra) may be missing where moonbus was installed from a wheel; a suite asks
``missing_peer`` before it imports one and reports the rows it cannot measure
as skipped (``skipped_row``: value NaN, the reason in the note), so
``moonbus bench`` runs on any install.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MISSED",
    "SKIPPED",
    "BenchRow",
    "LockedCounter",
    "best_of",
    "missing_peer",
    "rate_in_threads",
    "ratio_row",
    "skipped_row",
]

SKIPPED = "skipped: "  # how the note of a row that was not measured starts
# How the note of a row that missed its target starts when the reason matters
# more than the figure (an attack not contained): printed under the table.
MISSED = "NOT CONTAINED: "


@dataclass(frozen=True)
class BenchRow:
    """One benchmark line.

    ``value`` is ours, ``peer_value`` the peer's, in the same ``unit``.
    ``ratio`` > 1 always means "moonbus is better" (for rates ours/peer, for
    times peer/ours). ``ok`` is whether the target was met (``None`` when the
    row has no target that can be checked by a number).
    """

    area: str
    name: str
    value: float
    unit: str
    target: str
    peer: str | None = None
    peer_value: float | None = None
    ratio: float | None = None
    ok: bool | None = None
    note: str = ""

    @property
    def skipped(self) -> str | None:
        """Why this row (or its comparison) was not measured, or None."""
        return self.note.removeprefix(SKIPPED) if self.note.startswith(SKIPPED) else None


def missing_peer(module: str, package: str | None = None) -> str | None:
    """None when ``module`` imports; else why the rows that need it are skipped
    ("peer missing: pip install <package>"). Any ImportError counts (also a
    broken install of the peer), since the row cannot be measured either way."""
    try:
        importlib.import_module(module)
    except ImportError:
        return f"peer missing: pip install {package or module}"
    return None


def skipped_row(area: str, name: str, unit: str, reason: str, *, peer: str | None = None,
                value: float = float("nan"), target: str = "") -> BenchRow:
    """A row that could not be measured (``value`` NaN), or whose peer could not
    (``value`` ours, no ratio); ``reason`` goes into the note."""
    return BenchRow(area, name, value, unit, target, peer=peer, note=SKIPPED + reason)


def best_of(repeats: int, func: Callable[[], float]) -> float:
    """Run ``func`` (which returns a duration or a rate) and keep the best result.

    ``func`` returns seconds; the minimum is the least-disturbed measurement.
    """
    return min(func() for _ in range(max(1, repeats)))


def timed(func: Callable[[], object]) -> float:
    """Seconds taken by one call of ``func``."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def rate_in_threads(
    threads: int, per_thread: int, make: Callable[[], Callable[[], object]]
) -> float:
    """Calls/s of ``threads`` threads each calling ``make()``'s function
    ``per_thread`` times. ``make`` runs on each thread before the start (so a
    thread can have its own connection); the clock runs from the moment all
    are ready until the last is done. A thread's error is raised here."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work() -> None:
        func = make()
        barrier.wait()
        try:
            for _ in range(per_thread):
                func()
        except BaseException as exc:  # raised below, on the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return threads * per_thread / elapsed


def ratio_row(
    area: str,
    name: str,
    *,
    ours: float,
    peer: str,
    theirs: float,
    unit: str,
    higher_is_better: bool,
    min_ratio: float | None,
    target: str,
    note: str = "",
) -> BenchRow:
    """Build a row comparing ours with a peer; ratio > 1 means we are better."""
    if higher_is_better:
        ratio = ours / theirs if theirs else float("inf")
    else:
        ratio = theirs / ours if ours else float("inf")
    ok = None if min_ratio is None else ratio >= min_ratio
    return BenchRow(
        area=area,
        name=name,
        value=ours,
        unit=unit,
        target=target,
        peer=peer,
        peer_value=theirs,
        ratio=ratio,
        ok=ok,
        note=note,
    )


class LockedCounter:
    """The Python counter the hand-written glue peers increment from Lua (a
    lock and an int: what such glue writes), so the rows that compare
    moonbus's shared ints with that glue all measure the same peer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self, n: int = 1) -> int:
        with self._lock:
            self.value += n
            return self.value
