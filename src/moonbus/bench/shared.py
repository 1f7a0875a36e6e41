"""Shared-store benchmarks: the Python cost of an increment, per backend.

Rows:

- ``shared increment, memory backend, Python``: ``SharedInt.increment()`` on
  the memory backend, in ns/op, next to the same operation on a plain dict
  guarded by a ``threading.Lock`` (the least any thread-safe store can do).
  The Lua binding adds lupa's own call cost (~400 ns) on top of this figure.

Everything runs in the calling thread except where a row says otherwise.
"""

from __future__ import annotations

import threading
import timeit
from collections.abc import Callable
from dataclasses import replace

from moonbus.bench.harness import BenchRow, ratio_row
from moonbus.shared import SharedStore

__all__ = ["run"]

AREA = "shared"


def _ns_per_call(func: Callable[[], object], number: int, repeat: int) -> float:
    """Best-of-``repeat`` nanoseconds per call of ``func``."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e9


def memory_increment_row(quick: bool) -> BenchRow:
    """``SharedInt.increment()`` (memory) against a plain locked dict."""
    number, repeat = (20_000, 3) if quick else (500_000, 7)
    with SharedStore() as store:
        increment = store.int("hits").increment
        ours = _ns_per_call(increment, number, repeat)

    values: dict[str, int] = {}
    lock = threading.Lock()

    def plain() -> int:
        with lock:
            value = values["hits"] = values.get("hits", 0) + 1
        return value

    theirs = _ns_per_call(plain, number, repeat)
    def bare() -> None:
        lock.acquire()
        lock.release()

    bare_lock = _ns_per_call(bare, number, repeat)
    row = ratio_row(
        AREA,
        "shared increment, memory backend, Python",
        ours=ours,
        peer="plain dict + threading.Lock",
        theirs=theirs,
        unit="ns/op",
        higher_is_better=False,
        min_ratio=None,
        target="~100 ns/op (lupa adds ~400 ns)",
        note=f"bare lock acquire+release here: {bare_lock:.0f} ns",
    )
    return replace(row, ok=ours <= 100.0)


def run(quick: bool) -> list[BenchRow]:
    """Every shared-store row; ``quick`` shrinks the workloads for tests."""
    return [memory_increment_row(quick)]
