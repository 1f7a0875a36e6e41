"""An attached EventStore gets every event inside commit, in seq order."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from moonbus.bus import Bus, Event
from moonbus.errors import StoreError
from moonbus.store.base import EventStore, StoreSettings, StoreStatistics


class ListStore(EventStore):
    """A minimal in-test EventStore: a list, plus a way to make ``append`` fail.

    ``bus`` (set after the bus is built) lets ``append`` record the bus's
    ``last_seq`` at that moment, which shows the append runs inside commit.
    """

    def __init__(self, *, first_seq: int = 0, fail_on: str | None = None,
                 settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self.events: list[Event] = []
        self.fail_on = fail_on
        self.first_seq = first_seq
        self.bus: Bus | None = None
        self.seen_last_seq: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def append(self, event: Event) -> None:
        if event.type == self.fail_on:
            raise StoreError(f"disk full while appending {event.type}")
        if self.bus is not None:
            self.seen_last_seq.append(self.bus.last_seq)
        with self._lock:
            self.events.append(event)

    def query(self, *, after_tick: int | None = None, after_seq: int | None = None,
              types: str | Sequence[str] | None = None, limit: int | None = None,
              newest: bool = False) -> list[Event]:
        if isinstance(types, str):
            types = [types]
        with self._lock:
            found = [e for e in self.events
                     if (after_seq is None or e.seq > after_seq)
                     and (after_tick is None or (e.tick is not None and e.tick > after_tick))
                     and (types is None or e.type in types)]
        if limit is not None:
            found = found[-limit:] if newest else found[:limit]
        return found

    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.query(after_tick=after_tick):
            counts[event.type] = counts.get(event.type, 0) + 1
        return dict(sorted(counts.items()))

    def clear(self, event_type: str | None = None) -> int:
        with self._lock:
            kept = [e for e in self.events if event_type is not None and e.type != event_type]
            removed = len(self.events) - len(kept)
            self.events = kept
        return removed

    def prune(self) -> int:
        return 0  # no retention in this fake

    def flush(self) -> None:
        pass  # nothing is buffered

    def last_seq(self) -> int:
        with self._lock:
            return self.events[-1].seq if self.events else self.first_seq

    def statistics(self) -> StoreStatistics:
        with self._lock:
            n = len(self.events)
        return StoreStatistics(appended=n, pruned=0, stored=n, pending=0)

    def close(self) -> None:
        self.closed = True


def test_store_receives_every_event_in_seq_order_inside_commit() -> None:
    store = ListStore()
    with Bus(store=store, log_size=5) as bus:
        store.bus = bus
        emitted = [bus.emit(f"t{i % 3}", {"i": i}) for i in range(12)]
        assert store.events == emitted
        # The bus had not yet advanced last_seq when the store appended.
        assert store.seen_last_seq == [e.seq - 1 for e in emitted]
        assert store.query(types=["t1"]) == [e for e in emitted if e.type == "t1"]


def test_store_sees_events_before_handlers_do() -> None:
    store = ListStore()
    with Bus(store=store) as bus:
        at_handler: list[int] = []
        bus.on("a", lambda e: at_handler.append(len(store.events)))
        bus.emit("a")
        bus.emit("a")
        assert at_handler == [1, 2]


def test_store_gets_events_from_many_threads_in_seq_order() -> None:
    store = ListStore()
    with Bus(store=store) as bus:
        barrier = threading.Barrier(6)

        def worker() -> None:
            barrier.wait()
            for _ in range(200):
                bus.emit("w")

        pool = [threading.Thread(target=worker) for _ in range(6)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert [e.seq for e in store.events] == list(range(1, 1201))


def test_failing_store_makes_emit_raise_without_consuming_a_seq() -> None:
    store = ListStore(fail_on="bad")
    with Bus(store=store) as bus:
        seen: list[int] = []
        bus.on("*", lambda e: seen.append(e.seq))
        first = bus.emit("good")
        with pytest.raises(StoreError, match="disk full"):
            bus.emit("bad", {"x": 1})
        assert bus.last_seq == 1
        assert bus.log() == [first]
        assert seen == [1]
        second = bus.emit("good")
        assert second.seq == 2
        assert [e.seq for e in store.events] == [1, 2]
        assert bus.statistics().emitted == 2


def test_failing_store_does_not_resolve_waiters() -> None:
    import asyncio

    async def main() -> None:
        with Bus(store=ListStore(fail_on="bad")) as bus:
            task = asyncio.create_task(bus.wait_for("*", timeout=5))
            await asyncio.sleep(0)
            with pytest.raises(StoreError):
                bus.emit("bad")
            good = bus.emit("good")
            assert await task == good

    asyncio.run(main())


def test_store_type_filter_skips_unwanted_types_but_the_bus_commits_them() -> None:
    store = ListStore(settings=StoreSettings(types=frozenset({"keep"})))
    with Bus(store=store) as bus:
        bus.emit("keep")
        bus.emit("skip")
        bus.emit("keep")
        assert [e.seq for e in store.events] == [1, 3]
        assert [e.seq for e in bus.log()] == [1, 2, 3]
        store.settings.update(types=None)
        bus.emit("skip")
        assert [e.seq for e in store.events] == [1, 3, 4]


def test_bus_over_a_reopened_store_continues_numbering() -> None:
    store = ListStore(first_seq=41)
    with Bus(store=store) as bus:
        assert bus.last_seq == 41
        assert bus.emit("a").seq == 42
        stats = bus.statistics()
        assert (stats.last_seq, stats.emitted) == (42, 1)


def test_bus_close_does_not_close_the_store() -> None:
    store = ListStore()
    Bus(store=store).close()
    assert not store.closed  # the owner (Runtime) closes it
