"""The stream feed: other processes' events reach a sink, in order, once.

The first tests drive ``StreamFeed`` with a scripted source (no Redis); the
others follow a real stream on the shared Redis with two store instances
playing two processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.redis_backend import RedisEventStore
from moonbus.store.redis_feed import StreamFeed


class Sink:
    """Records what a bus would be told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attached: list[int] = []
        self.events: list[Event] = []
        self.own: list[int] = []
        self.uptos: list[int] = []
        self.drains = 0

    def attach_remote(self, after_seq: int) -> None:
        self.attached.append(after_seq)

    def deliver_remote(
        self, events: Sequence[Event], *, upto: int, own: Mapping[int, Event]
    ) -> None:
        with self.lock:
            self.events += events
            self.own += sorted(own)
            self.uptos.append(upto)

    def drain(self) -> None:
        with self.lock:
            self.drains += 1

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.events) >= count:
                    return
            time.sleep(0.01)
        raise AssertionError(f"got {len(self.events)} of {count} events")


def entry(seq: int, origin: bytes) -> list[Any]:
    fields = [b"t", b"hit", b"k", b"", b"ts", b"1", b"s", b"src", b"d", b'{"n":%d}' % seq,
              b"o", origin, b"x", b"0"]
    return [b"%d-0" % seq, fields]


class Script:
    """A StreamSource answering from a list of planned replies."""

    def __init__(self, reads: list[list[Any]], tails: list[tuple[int, list[Any]]]) -> None:
        self.reads = reads
        self.tails = tails
        self.calls: list[tuple[str, int]] = []
        self.closed = False

    def read(self, after: int, count: int, block_ms: int) -> list[Any]:
        self.calls.append(("read", after))
        if not self.reads:
            raise StoreError("script exhausted")
        return self.reads.pop(0)

    def tail(self, after: int, count: int) -> tuple[int, list[Any]]:
        self.calls.append(("tail", after))
        return self.tails.pop(0)

    def rebase(self, floor: int) -> int:
        self.calls.append(("rebase", floor))
        return 0

    def close(self) -> None:
        self.closed = True


def scripted_feed(source: Script, sink: Sink, after: int = 0) -> StreamFeed:
    return StreamFeed(source, sink, origin="me", after_seq=after, url="redis://x", count=3)


def test_a_batch_splits_own_and_remote_entries() -> None:
    sink = Sink()
    source = Script([[entry(3, b"other"), entry(4, b"me"), entry(6, b"other")]], [])
    feed = scripted_feed(source, sink, after=2)
    feed._step()
    assert [e.seq for e in sink.events] == [3, 6]
    assert sink.events[0].data == {"n": 3}
    assert sink.own == [4]
    assert sink.uptos == [6]  # 5 is not in the stream: read past
    with pytest.raises(StoreError):  # the script has no more replies
        feed._step()
    assert source.calls[-1] == ("read", 6)  # the next read starts after 6


def test_an_idle_read_learns_the_counter_from_the_atomic_tail() -> None:
    sink = Sink()
    source = Script([[], [], []], [(5, []), (5, []), (7, [entry(7, b"other")])])
    feed = scripted_feed(source, sink)
    feed._step()  # nothing new, but seqs 1..5 exist no more: accounted for
    assert sink.uptos == [5]
    feed._step()  # nothing at all changed: the bus is not bothered
    assert sink.uptos == [5]
    feed._step()
    assert sink.uptos == [5, 7]
    assert [e.seq for e in sink.events] == [7]
    assert source.calls == [("read", 0), ("tail", 0), ("read", 5), ("tail", 5),
                            ("read", 5), ("tail", 5)]


def test_a_full_tail_page_does_not_claim_the_counter() -> None:
    sink = Sink()
    page = [entry(1, b"o"), entry(2, b"o"), entry(3, b"o")]  # count is 3: maybe more
    feed = scripted_feed(Script([[]], [(9, page)]), sink)
    feed._step()
    assert sink.uptos == [3]


def test_a_stream_that_went_back_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    feed = scripted_feed(Script([[]], [(2, [])]), sink, after=10)
    feed._closing.set()  # no second wait
    feed._step()
    assert sink.uptos == []
    assert "went back from seq 10 to 2" in caplog.text
    assert source_calls(feed)[-1] == ("rebase", 10)  # the counter is moved back up
    assert feed.data_losses == 1


def source_calls(feed: StreamFeed) -> list[tuple[str, int]]:
    source = feed._source
    assert isinstance(source, Script)
    return source.calls


# ------------------------------------------------------------ a real stream


@pytest.fixture
def prefix() -> Iterator[str]:
    redis_or_skip()
    name = unique_prefix()
    try:
        yield name
    finally:
        delete_prefix(name)


@pytest.mark.redis
def test_events_of_another_writer_arrive_in_order_once(prefix: str) -> None:
    with RedisEventStore(REDIS_URL, prefix=prefix) as here, RedisEventStore(
        REDIS_URL, prefix=prefix
    ) as there:
        there.append_new("before", None, ts=0, source="there")  # not replayed
        sink = Sink()
        feed = here.follow(sink)
        try:
            assert sink.attached == [1]
            mine = here.append_new("mine", None, ts=1, source="here")
            theirs = there.append_new_many(
                [Event.create("hit", {"n": n}, seq=0, ts=n, source="there") for n in range(50)]
            )
            sink.wait_for(50)
            time.sleep(0.2)  # nothing more arrives
            assert sink.events == theirs
            assert sink.own == [mine.seq]
            assert sink.uptos[-1] == theirs[-1].seq
            assert sink.drains >= 1
        finally:
            feed.close()
        feed.close()  # idempotent


@pytest.mark.redis
def test_closing_the_store_stops_its_feeds(prefix: str) -> None:
    store = RedisEventStore(REDIS_URL, prefix=prefix)
    feed = store.follow(Sink())
    store.close()
    assert not feed._reader.is_alive()
    assert not feed._deliverer.is_alive()
