"""What only the Redis event store does: one numbering for every writer, transit
entries, the global cap, exactly-once appends, URL opening, the bus on top."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from tests.shared.redis_support import (
    REDIS_URL,
    delete_prefix,
    free_port,
    redis_or_skip,
    unique_prefix,
)

from moonbus.bus import Bus
from moonbus.bus.event import Event
from moonbus.errors import ClosedError, StoreError
from moonbus.redisio.batch import LinkLost
from moonbus.runtime import Runtime
from moonbus.store import StoreSettings, open_event_store
from moonbus.store.redis_backend import RedisEventStore
from moonbus.store.redis_scripts import Keys

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> Iterator[str]:
    redis_or_skip()
    name = unique_prefix()
    try:
        yield name
    finally:
        delete_prefix(name)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        yield conn
    finally:
        conn.close()


def draft(event_type: str, n: int, tick: int | None = None) -> Event:
    return Event.create(event_type, {"n": n}, seq=0, tick=tick, source="test", ts=n)


def stream_ids(client: redis.Redis, prefix: str) -> list[int]:
    entries = client.xrange(Keys(prefix).stream)
    return [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]


def test_two_writers_share_one_numbering(prefix: str) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as one, RedisEventStore(
        REDIS_URL, prefix=prefix
    ) as two:
        got = []
        for n in range(10):
            writer = one if n % 2 else two
            got.append(writer.append_new("hit", {"n": n}, tick=n, ts=n, source=f"w{n % 2}"))
        assert [e.seq for e in got] == list(range(1, 11))
        assert one.query() == two.query() == got
        assert one.last_seq() == two.last_seq() == 10
        assert one.origin != two.origin


def test_append_new_many_assigns_consecutive_seqs_in_order(prefix: str) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as store:
        store.append_many([Event.create("old", None, seq=5, tick=1)])
        events = store.append_new_many([draft("a", n, tick=n) for n in range(1200)])
        assert [e.seq for e in events] == list(range(6, 1206))  # spans several script runs
        assert [e.data["n"] for e in events] == list(range(1200))
        assert store.query(after_seq=5) == events


def test_concurrent_appends_from_threads_get_distinct_ordered_seqs(
    prefix: str, client: redis.Redis
) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as store:
        results: list[list[Event]] = [[] for _ in range(6)]

        def work(index: int) -> None:
            for n in range(150):
                results[index].append(store.append_new("t", {"w": index, "n": n}, ts=n, source="t"))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for events in results:  # each thread's own appends are in its order
            assert [e.data["n"] for e in events] == list(range(150))
            assert [e.seq for e in events] == sorted(e.seq for e in events)
        assert stream_ids(client, prefix) == list(range(1, 901))
        assert store.summary() == {"t": 900}


def test_bus_on_a_redis_store_takes_the_server_seqs(prefix: str) -> None:
    url = f"{REDIS_URL}?prefix={prefix}"
    with open_event_store(url) as other:
        other.append_many([Event.create("before", None, seq=41)])
    with Runtime(events=url, threaded=False) as rt:
        seen: list[int] = []
        rt.bus.on("*", lambda e: seen.append(e.seq))
        first = rt.bus.emit("game_action", {"interaction": "Mine"}, tick=3)
        second = rt.bus.emit("tick", None, tick=4)
        assert (first.seq, second.seq) == (42, 43)
        assert seen == [42, 43]
        assert rt.bus.last_seq == 43
        assert rt.event_store is not None
        assert rt.event_store.query(after_seq=41) == [first, second]
        assert rt.admin.run("events") == "- before: 1\n- game_action: 1\n- tick: 1"


def test_bus_threads_emitting_commit_in_store_order(prefix: str) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as store, Bus(store=store) as bus:
        delivered: list[int] = []
        bus.on("*", lambda e: delivered.append(e.seq))

        def work() -> None:
            for n in range(100):
                bus.emit("x", {"n": n})

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert delivered == list(range(1, 401))
        assert [e.seq for e in bus.log()] == delivered
        assert store.query() == bus.log()


def test_unrecorded_types_travel_as_transit_entries(prefix: str, client: redis.Redis) -> None:
    live = StoreSettings(types=frozenset({"a"}))
    with RedisEventStore(REDIS_URL, prefix=prefix, settings=live, transit_keep=3) as store:
        events = [store.append_new(t, {"n": n}, tick=n, ts=n, source="s")
                  for n, t in enumerate("abababab")]
        assert [e.seq for e in events] == list(range(1, 9))
        assert stream_ids(client, prefix) == list(range(1, 9))  # all travel
        assert [e.seq for e in store.query()] == [1, 3, 5, 7]  # only "a" is recorded
        assert store.query(types=["b"]) == []
        assert store.summary() == {"a": 4}
        assert store.statistics().stored == 4
        store.prune()
        # transit entries older than the newest 3 seqs are gone; recorded ones stay
        assert stream_ids(client, prefix) == [1, 3, 5, 6, 7, 8]
        # explicit-seq appends (imports) of unrecorded types are not written at all
        store.append_many([Event.create("b", None, seq=20)])
        assert stream_ids(client, prefix)[-1] == 8
        assert store.last_seq() == 20


def test_max_events_caps_the_stream_with_minid(prefix: str, client: redis.Redis) -> None:
    settings = StoreSettings(retention_ticks=None)
    with RedisEventStore(REDIS_URL, prefix=prefix, settings=settings, max_events=10) as store:
        store.append_new_many([draft("abc"[n % 3], n, tick=n) for n in range(100)])
        assert store.prune() == 90
        assert stream_ids(client, prefix) == list(range(91, 101))
        assert store.summary() == {"a": 4, "b": 3, "c": 3}
        assert [e.seq for e in store.query(after_tick=0)] == list(range(91, 101))
        assert store.summary(after_tick=95) == {"a": 2, "b": 1, "c": 1}


def test_prune_runs_in_rounds_and_keeps_counts_exact(prefix: str) -> None:
    live = StoreSettings(retention_ticks=None)
    with RedisEventStore(REDIS_URL, prefix=prefix, settings=live, prune_every=10**9) as store:
        store.append_new_many([draft("abc"[n % 3], n, tick=n) for n in range(12_000)])
        live.update(retention_count=10)
        assert store.prune() == 11_970  # more than one round of 5,000 deletions
        assert store.summary() == {"a": 10, "b": 10, "c": 10}
        assert [e.seq for e in store.query(types="a")] == list(range(11_971, 12_000, 3))


def test_a_lost_reply_is_resent_and_not_applied_twice(
    prefix: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as store:
        store.append_new("warmup", None, ts=0, source="t")
        link: Any = store._redis.batcher._link
        real_read = link.read
        lost: list[object] = []

        def read_then_drop() -> Any:
            reply = real_read()  # the server ran the append and answered...
            if not lost:
                lost.append(reply)
                link._conn.disconnect()  # ...but the answer never reaches us
                raise LinkLost("connection reset (test)")
            return reply

        monkeypatch.setattr(link, "read", read_then_drop)
        event = store.append_new("hit", {"n": 1}, ts=1, source="t")
        monkeypatch.undo()
        assert lost == [[2]]  # the first run assigned seq 2
        assert event.seq == 2  # the re-sent append found that answer
        assert stream_ids(client, prefix) == [1, 2]
        assert store.summary() == {"hit": 1, "warmup": 1}
        assert store.append_new("hit", None, ts=2, source="t").seq == 3


def test_explicit_seq_errors_name_both_seqs(prefix: str) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as one, RedisEventStore(
        REDIS_URL, prefix=prefix
    ) as two:
        one.append_new("a", None, ts=0, source="s")
        one.append_new("a", None, ts=0, source="s")
        with pytest.raises(StoreError, match="event seq 2 is not after seq 2"):
            two.append(Event.create("a", None, seq=2))
        assert two.last_seq() == 2


def test_foreign_stream_entries_are_refused_clearly(prefix: str, client: redis.Redis) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as store:
        client.xadd(Keys(prefix).stream, {"hello": "world"}, id="1-0")
        with pytest.raises(StoreError, match="not in moonbus's format"):
            store.query()


def test_open_by_url_with_options(prefix: str) -> None:
    url = f"{REDIS_URL}?prefix={prefix}&prune_every=7&transit_keep=5&max_events=100"
    with open_event_store(url) as store:
        assert isinstance(store, RedisEventStore)
        assert (store.prefix, store.transit_keep, store.max_events) == (prefix, 5, 100)
        assert store.url == REDIS_URL
    with pytest.raises(ClosedError, match="is closed"):
        store.query()


def test_unreachable_redis_names_the_url_without_password() -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError, match="cannot reach Redis at") as info:
        open_event_store(f"{url}?prefix=x")
    assert "secret" not in str(info.value)
    assert f"redis://user:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in str(info.value)


def test_data_that_is_not_json_is_refused_before_anything_is_sent(prefix: str) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as store:
        with pytest.raises(StoreError, match="cannot be stored as JSON"):
            store.append_new("bad", {"x": object()}, ts=0, source="s")
        assert store.last_seq() == 0
