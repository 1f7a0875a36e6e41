"""Event-store benchmarks on Redis: appending to the stream, ours next to raw redis-py.

Rows (measured side by side in one run, alternating rounds, best of each):

* ``event append to the stream (redis)``: ``RedisEventStore.append_new_many``
  with 100 events per call (one round trip, one script run that assigns 100
  global seqs and keeps the per-type indexes and counts) against raw redis-py
  ``XADD`` of the same fields, pipelined 100 per round trip (no seq
  assignment, no indexes). Target >= 0.7x.
* ``bus.emit on a redis store``: ``Bus.emit`` (one round trip per event: the
  seq must be known when ``emit`` returns) against raw unpipelined ``XADD``.
  Informational: the price of a server-assigned seq is one round trip.
* ``bus.emit from 8 threads on a redis store``: the appends of concurrent emits
  travel together (one round trip carries several; the reorder point keeps the
  seq order) against 8 threads calling raw ``XADD`` through one client (a
  connection each from its pool). Informational; the note gives the mean
  number of appends per round trip.

Uses ``MOONBUS_BENCH_REDIS`` (default redis://127.0.0.1:6379/0) with a unique
key prefix whose keys are deleted afterwards; without a reachable Redis the
rows are reported as skipped (value NaN) with the reason in the note, as they
are without the redis package ("peer missing: pip install redis"): the Redis
store is imported only once the package is known to be there.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from moonbus.bench.harness import BenchRow, missing_peer, rate_in_threads, ratio_row, skipped_row
from moonbus.bus import Bus
from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.base import StoreSettings
from moonbus.store.event_codec import encode_data

__all__ = ["run"]

AREA = "store"
_TYPES = ("game_action", "tick", "player:chat", "inventory_changed")
_BATCH = 100
_NAMES = (
    "event append to the stream (redis)",
    "bus.emit on a redis store",
    "bus.emit from 8 threads on a redis store",
)
_THREADS = 8


def _data(n: int) -> dict[str, object]:
    return {"player": f"p{n % 17}", "interaction": "Mine Iron rocks", "xp": n % 97}


def _drafts(n: int) -> list[Event]:
    return [
        Event.create(_TYPES[i % 4], _data(i), seq=0, tick=i // 10, source="bench", ts=i)
        for i in range(n)
    ]


def _rate(count: int, func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return count / (time.perf_counter() - start)


def _numbered(call: Callable[[int], object]) -> Callable[[], Callable[[], object]]:
    """For rate_in_threads: each thread calls ``call(0)``, ``call(1)``, ..."""

    def make() -> Callable[[], object]:
        numbers = itertools.count()
        return lambda: call(next(numbers))

    return make


def _skipped(reason: str) -> list[BenchRow]:
    return [skipped_row(AREA, name, "events/s", reason) for name in _NAMES]


def redis_rows(quick: bool, url: str) -> list[BenchRow]:
    """Both rows against the Redis at ``url``."""
    missing = missing_peer("redis")
    if missing is not None:
        return _skipped(missing)
    import redis

    from moonbus.store.redis_backend import RedisEventStore

    prefix = f"moonbus-bench-{uuid.uuid4().hex}"
    settings = StoreSettings(retention_ticks=None)
    try:
        store = RedisEventStore(url, prefix=prefix, settings=settings, prune_every=10**9)
    except StoreError as exc:
        return _skipped(str(exc))
    client = redis.Redis.from_url(url)
    raw_key = f"{prefix}:raw"
    batches, emits, repeat = (5, 200, 1) if quick else (60, 3000, 3)
    drafts = _drafts(_BATCH * batches)
    bus = Bus(store=store)

    def ours_batched() -> float:
        def work() -> None:
            for start in range(0, len(drafts), _BATCH):
                store.append_new_many(drafts[start : start + _BATCH])

        return _rate(len(drafts), work)

    def raw_pipelined() -> float:
        def work() -> None:
            for start in range(0, len(drafts), _BATCH):
                pipe = client.pipeline(transaction=False)
                for event in drafts[start : start + _BATCH]:
                    pipe.xadd(raw_key, _fields(event))
                pipe.execute()

        return _rate(len(drafts), work)

    def ours_emit() -> float:
        def work() -> None:
            for i in range(emits):
                bus.emit(_TYPES[i % 4], _data(i), tick=i // 10)

        return _rate(emits, work)

    def raw_unpipelined() -> float:
        def work() -> None:
            for event in drafts[:emits]:
                client.xadd(raw_key, _fields(event))

        return _rate(emits, work)

    def ours_threads() -> float:
        return rate_in_threads(_THREADS, emits // _THREADS,
                               _numbered(lambda i: bus.emit(_TYPES[i % 4], _data(i))))

    def raw_threads() -> float:
        fields = _fields(drafts[0])
        return rate_in_threads(_THREADS, emits // _THREADS,
                               _numbered(lambda i: client.xadd(raw_key, fields)))

    funcs = (ours_batched, raw_pipelined, ours_emit, raw_unpipelined, ours_threads, raw_threads)
    rates = {f.__name__: 0.0 for f in funcs}
    per_trip = 0.0
    try:
        for _ in range(repeat):  # interleaved, best of each
            for func in funcs:
                before = store.round_trips()
                rate = func()
                if func is ours_threads:
                    trips, ops = (a - b for a, b in zip(store.round_trips(), before, strict=True))
                    per_trip = max(per_trip, ops / trips if trips else 0.0)
                rates[func.__name__] = max(rates[func.__name__], rate)
    finally:
        bus.close()
        store.clear()
        store.close()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    return [
        ratio_row(
            AREA,
            _NAMES[0],
            ours=rates["ours_batched"],
            peer="redis-py XADD, pipelined x100",
            theirs=rates["raw_pipelined"],
            unit="events/s",
            higher_is_better=True,
            min_ratio=0.7,
            target=">= 0.7x",
            note="100 events per script run: global seqs, per-type indexes and counts",
        ),
        ratio_row(
            AREA,
            _NAMES[1],
            ours=rates["ours_emit"],
            peer="redis-py XADD, unpipelined",
            theirs=rates["raw_unpipelined"],
            unit="events/s",
            higher_is_better=True,
            min_ratio=None,
            target="info: one round trip per emit",
            note="the seq comes from Redis, so each emit waits for its reply",
        ),
        ratio_row(
            AREA,
            _NAMES[2],
            ours=rates["ours_threads"],
            peer=f"redis-py XADD from {_THREADS} threads",
            theirs=rates["raw_threads"],
            unit="events/s",
            higher_is_better=True,
            min_ratio=None,
            target="info: appends batched across threads",
            note=f"{per_trip:.1f} appends per round trip",
        ),
    ]


def _fields(event: Event) -> dict[Any, Any]:
    return {
        "t": event.type,
        "k": "" if event.tick is None else event.tick,
        "ts": event.ts,
        "s": event.source,
        "d": encode_data(event.data),
    }


def run(quick: bool) -> list[BenchRow]:
    """Every Redis event-store row; ``quick`` shrinks the workloads for tests."""
    return redis_rows(quick, os.environ.get("MOONBUS_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
