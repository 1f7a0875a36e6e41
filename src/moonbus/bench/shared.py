"""Shared-store benchmarks: the cost of an increment, per backend.

Rows:

- ``shared increment, memory backend, Python``: ``SharedInt.increment()`` on
  the memory backend, in ns/op, next to the same operation on a plain dict
  guarded by a ``threading.Lock`` (the least any thread-safe store can do).
  The Lua binding adds lupa's own call cost (~400 ns) on top of this figure.
- ``shared increment from one thread (redis)``: ``SharedInt.increment()`` on
  Redis (one atomic script call per op, kind and overflow checked on the
  server) against raw redis-py ``INCR``, unpipelined, in ops/s.
- ``shared increment from 8 threads (redis)``: 8 threads incrementing one
  shared int through one store (their calls are batched into shared round
  trips) against 8 threads calling raw redis-py ``INCR`` through one client.

The Redis rows use ``MOONBUS_BENCH_REDIS`` (default redis://127.0.0.1:6379/0)
with a unique key prefix and delete their keys; without a reachable Redis they
are reported as skipped (value NaN, ``ok`` None) with the reason in the note,
as they are without the redis package ("peer missing: pip install redis").
"""

from __future__ import annotations

import os
import threading
import timeit
import uuid
from collections.abc import Callable

from moonbus.bench.harness import BenchRow, missing_peer, rate_in_threads, ratio_row, skipped_row
from moonbus.errors import SharedBackendError
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
        min_ratio=1.0,
        target=">= 1x: no dearer than the least a thread-safe store can do",
        note=f"bare lock acquire+release here: {bare_lock:.0f} ns; "
        "from Lua, lupa adds its call cost (see the host rows)",
    )
    return row


def redis_rows(quick: bool, url: str) -> list[BenchRow]:
    """The two Redis increment rows (single thread and 8 threads)."""
    names = ("shared increment from one thread (redis)", "shared increment from 8 threads (redis)")
    missing = missing_peer("redis")
    if missing is not None:
        return [skipped_row(AREA, name, "ops/s", missing) for name in names]
    import redis

    prefix = f"moonbus-bench-{uuid.uuid4().hex}"
    try:
        store = SharedStore.from_url(url, prefix=prefix)
    except SharedBackendError as exc:
        return [skipped_row(AREA, name, "ops/s", str(exc)) for name in names]
    client = redis.Redis.from_url(url)
    raw_key = f"{prefix}:raw"
    single, per_thread, repeat = (300, 60, 1) if quick else (5_000, 1_500, 3)
    try:
        counter = store.int("hits")

        def ours_single() -> float:
            return rate_in_threads(1, single, lambda: counter.increment)

        def raw_single() -> float:
            return rate_in_threads(1, single, lambda: lambda: client.incr(raw_key))

        def ours_eight() -> float:
            return rate_in_threads(8, per_thread, lambda: counter.increment)

        def raw_eight() -> float:
            return rate_in_threads(8, per_thread, lambda: lambda: client.incr(raw_key))

        def unbatched_eight() -> float:
            # The same 8 threads with a store (so a connection) each: no batching.
            return rate_in_threads(8, per_thread, lambda: own_store().int("hits").increment)

        def own_store() -> SharedStore:
            extra = SharedStore.from_url(url, prefix=prefix)
            extra_stores.append(extra)
            return extra

        extra_stores: list[SharedStore] = []
        funcs = (ours_single, raw_single, ours_eight, raw_eight, unbatched_eight)
        rates = {f.__name__: 0.0 for f in funcs}
        for _ in range(repeat):  # interleaved, best of each
            for func in funcs:
                rates[func.__name__] = max(rates[func.__name__], func())
    finally:
        store.namespace("global").clear()
        client.delete(raw_key)
        client.close()
        store.close()
        for extra in extra_stores:
            extra.close()
    return [
        ratio_row(
            AREA,
            names[0],
            ours=rates["ours_single"],
            peer="redis-py INCR, unpipelined",
            theirs=rates["raw_single"],
            unit="ops/s",
            higher_is_better=True,
            min_ratio=0.8,
            target=">= 0.8x",
            note="one EVALSHA per op: kind check + exact 64-bit add",
        ),
        ratio_row(
            AREA,
            names[1],
            ours=rates["ours_eight"],
            peer="redis-py INCR from 8 threads",
            theirs=rates["raw_eight"],
            unit="ops/s",
            higher_is_better=True,
            min_ratio=3.0,
            target=">= 3x",
            note=(
                "concurrent calls batched into shared round trips; "
                f"unbatched (a store per thread): {rates['unbatched_eight']:.0f} ops/s"
            ),
        ),
    ]


def run(quick: bool) -> list[BenchRow]:
    """Every shared-store row; ``quick`` shrinks the workloads for tests."""
    url = os.environ.get("MOONBUS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    return [memory_increment_row(quick), *redis_rows(quick, url)]
