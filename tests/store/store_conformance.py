"""The contract every EventStore backend keeps, as a reusable test class.

A backend's test module provides a ``stores`` fixture (a ``Stores`` built from
a ``Backend``) and subclasses ``EventStoreConformance``::

    @pytest.fixture(params=[...])
    def stores(request, tmp_path): ...

    class TestMyBackend(EventStoreConformance):
        pass

Only the public ``EventStore`` API is used here.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moonbus.bus.event import Event
from moonbus.errors import ClosedError, ConfigError, StoreError
from moonbus.store.base import EventStore, StoreSettings


@dataclass(frozen=True)
class Backend:
    """How to open one backend: ``open(key, settings)`` opens the storage named ``key``."""

    name: str
    persistent: bool
    open: Callable[[str, StoreSettings | None], EventStore]


class Stores:
    """Opens fresh stores for one test and closes them all afterwards."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._keys: dict[int, tuple[str, StoreSettings | None]] = {}
        self._opened: list[EventStore] = []
        self._counter = itertools.count()

    @property
    def persistent(self) -> bool:
        return self.backend.persistent

    def new(self, settings: StoreSettings | None = None) -> EventStore:
        return self._open(f"store{next(self._counter)}", settings)

    def _open(self, key: str, settings: StoreSettings | None) -> EventStore:
        store = self.backend.open(key, settings)
        self._keys[id(store)] = (key, settings)
        self._opened.append(store)
        return store

    def reopen(self, store: EventStore) -> EventStore:
        """Close ``store`` and open its storage again (persistent backends only)."""
        if not self.persistent:
            pytest.skip(f"{self.backend.name} does not keep events across close")
        key, store_settings = self._keys[id(store)]
        store.close()
        return self._open(key, store_settings)

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


def make_events(
    n: int,
    *,
    start: int = 1,
    types: Sequence[str] = ("a", "b", "c"),
    tick: Callable[[int], int | None] = lambda seq: seq // 2,
) -> list[Event]:
    return [
        Event.create(
            types[seq % len(types)],
            {"n": seq, "name": f"event {seq}", "nested": {"xs": [seq, seq + 1]}},
            seq=seq,
            tick=tick(seq),
            source="test",
            ts=1_700_000_000_000 + seq,
        )
        for seq in range(start, start + n)
    ]


def expected(
    events: Sequence[Event],
    *,
    after_tick: int | None = None,
    after_seq: int | None = None,
    types: Sequence[str] | None = None,
    limit: int | None = None,
    newest: bool = False,
) -> list[Event]:
    """The reference model of ``EventStore.query``."""
    chosen = [
        event
        for event in sorted(events, key=lambda e: e.seq)
        if (after_tick is None or (event.tick is not None and event.tick > after_tick))
        and (after_seq is None or event.seq > after_seq)
        and (types is None or event.type in types)
    ]
    if limit is None:
        return chosen
    if limit == 0:
        return []
    return chosen[-limit:] if newest else chosen[:limit]


def dicts(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [event.to_dict() for event in events]


@dataclass(frozen=True)
class Item:
    """A value object as a host would put one in event data."""

    name: str
    count: int


_events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "player:join"]),
        st.one_of(st.none(), st.integers(min_value=-3, max_value=30)),
        st.integers(min_value=1, max_value=3),  # seq step (gaps are allowed in a store)
    ),
    max_size=40,
)
_query_strategy = st.fixed_dictionaries(
    {},
    optional={
        "after_tick": st.integers(min_value=-5, max_value=32),
        "after_seq": st.integers(min_value=-1, max_value=90),
        "types": st.lists(st.sampled_from(["a", "b", "c", "player:join", "zzz"]), max_size=3),
        "limit": st.integers(min_value=0, max_value=12),
        "newest": st.booleans(),
    },
)


class EventStoreConformance:
    """Shared tests; needs a ``stores`` fixture yielding ``Stores``."""

    # ------------------------------------------------------------ basics

    def test_empty_store(self, stores: Stores) -> None:
        store = stores.new()
        assert store.query() == []
        assert store.summary() == {}
        assert store.snapshot() == {}
        assert store.last_seq() == 0
        assert store.statistics().stored == 0

    def test_events_come_back_equal_and_frozen(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(10)
        for event in events:
            store.append(event)
        got = store.query()
        assert dicts(got) == dicts(events)
        assert got == events
        with pytest.raises(TypeError):
            got[0].data["n"] = 5  # type: ignore[index]
        assert isinstance(got[0].data["nested"]["xs"], tuple)

    def test_value_objects_unicode_and_empty_data(self, stores: Stores) -> None:
        store = stores.new()
        first = Event.create("loot", {"item": Item("Iron ore", 3), "who": "Zoë ⛏"}, seq=1, tick=1)
        second = Event.create("ping", None, seq=2, tick=None)
        store.append(first)
        store.append(second)
        got = store.query()
        item = {"name": "Iron ore", "count": 3}
        assert got[0].to_dict()["data"] == {"item": item, "who": "Zoë ⛏"}
        assert got[1].data == {}
        assert got[1].tick is None
        assert dicts(got) == dicts([first, second])

    def test_append_many_keeps_order(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(25)
        store.append_many(events)
        assert store.query() == events
        assert store.last_seq() == 25

    # ------------------------------------------------------------ queries

    def test_query_filters(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(30)
        store.append_many(events)
        cases: list[dict[str, Any]] = [
            {"after_seq": 12},
            {"after_tick": 7},
            {"after_tick": 7, "after_seq": 20},
            {"types": ["b"]},
            {"types": ["c", "a"]},
            {"types": ["a"], "after_tick": 5},
            {"types": ["a", "b"], "after_tick": 5, "limit": 4},
            {"types": ["a", "b"], "after_tick": 5, "limit": 4, "newest": True},
            {"limit": 5},
            {"limit": 5, "newest": True},
            {"after_tick": 3, "limit": 3, "newest": True},
            {"types": ["b"], "after_seq": 10, "limit": 2, "newest": True},
            {"types": ["nope"]},
            {"limit": 0},
            {"after_tick": 1000},
        ]
        for case in cases:
            assert store.query(**case) == expected(events, **case), case

    def test_types_may_be_one_name(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(9)
        store.append_many(events)
        assert store.query(types="a") == expected(events, types=["a"])

    def test_events_without_tick_match_seq_queries_only(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(12, tick=lambda seq: None if seq % 3 == 0 else seq)
        store.append_many(events)
        assert store.query(after_seq=5) == expected(events, after_seq=5)
        assert store.query(after_tick=0) == [e for e in events if e.tick is not None]
        assert store.query(types=["a"]) == expected(events, types=["a"])
        assert store.summary()["a"] == 4

    def test_ticks_going_backwards_still_query_in_seq_order(self, stores: Stores) -> None:
        store = stores.new()
        ticks = [5, 6, 2, 9, 9, 1, 7, None, 3, 8, 8, 4]
        events = make_events(len(ticks), tick=lambda seq: ticks[seq - 1])
        store.append_many(events)
        for case in (
            {"after_tick": 2},
            {"after_tick": 2, "limit": 3},
            {"after_tick": 2, "limit": 3, "newest": True},
            {"after_tick": 0, "types": ["a", "c"], "limit": 2, "newest": True},
            {"after_tick": 4, "types": ["b"]},
        ):
            assert store.query(**case) == expected(events, **case), case

    def test_bad_query_arguments(self, stores: Stores) -> None:
        store = stores.new()
        with pytest.raises(ConfigError, match="limit"):
            store.query(limit=-1)
        with pytest.raises(ConfigError, match="after_tick"):
            store.query(after_tick="5")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="types"):
            store.query(types=[1])  # type: ignore[list-item]

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(spec=_events_strategy, queries=st.lists(_query_strategy, min_size=1, max_size=6))
    def test_queries_match_the_model(
        self,
        stores: Stores,
        spec: list[tuple[str, int | None, int]],
        queries: list[dict[str, Any]],
    ) -> None:
        seq = 0
        events = []
        for event_type, tick, step in spec:
            seq += step
            events.append(Event.create(event_type, {"seq": seq}, seq=seq, tick=tick, ts=seq))
        store = stores.new(StoreSettings(retention_ticks=None))
        try:
            for event in events:
                store.append(event)
            for query in queries:
                assert store.query(**query) == expected(events, **query), query
            for after_tick in (None, 0, 10):
                model: dict[str, int] = {}
                for event in expected(events, after_tick=after_tick):
                    model[event.type] = model.get(event.type, 0) + 1
                assert store.summary(after_tick) == dict(sorted(model.items()))
        finally:
            store.close()

    # ------------------------------------------------ summary, snapshot, export

    def test_summary_and_snapshot(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(12)
        store.append_many(events)
        assert store.summary() == {"a": 4, "b": 4, "c": 4}
        assert list(store.summary()) == ["a", "b", "c"]
        assert store.summary(after_tick=3) == {"a": 2, "b": 1, "c": 2}  # seqs 8..12
        assert store.summary(after_tick=100) == {}
        snapshot = store.snapshot(after_tick=3)
        assert list(snapshot) == ["a", "b", "c"]
        for event_type, got in snapshot.items():
            assert got == expected(events, after_tick=3, types=[event_type])

    def test_export_ndjson(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(15)
        events.append(Event.create("loot", {"item": Item("Zoë's ore", 1)}, seq=16, tick=None))
        store.append_many(events)
        out = io.StringIO()
        assert store.export_ndjson(out) == 16
        assert out.getvalue() == "".join(event.to_json() + "\n" for event in events)
        lines = out.getvalue().splitlines()
        assert [json.loads(line) for line in lines] == dicts(events)
        filtered = io.StringIO()
        count = store.export_ndjson(filtered, types=["b"], after_tick=2, limit=3)
        assert count == 3
        wanted = expected(events, types=["b"], after_tick=2, limit=3)
        assert filtered.getvalue() == "".join(e.to_json() + "\n" for e in wanted)

    # ------------------------------------------------------------ clear, seq

    def test_clear_one_type_and_all(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(12)
        store.append_many(events)
        assert store.clear("b") == 4
        assert store.query() == [e for e in events if e.type != "b"]
        assert store.clear("b") == 0
        assert store.clear() == 8
        assert store.query() == []
        assert store.last_seq() == 12
        store.append(make_events(1, start=13)[0])
        assert [e.seq for e in store.query()] == [13]

    def test_seq_must_increase(self, stores: Stores) -> None:
        store = stores.new()
        store.append_many(make_events(3))
        with pytest.raises(StoreError, match="seq 3"):
            store.append(make_events(1, start=3)[0])
        with pytest.raises(StoreError, match="seq 2 is not after seq 4"):
            store.append_many(make_events(1, start=4) + make_events(1, start=2))
        assert [e.seq for e in store.query()] == [1, 2, 3]  # nothing of the bad batch
        store.append(make_events(1, start=4)[0])
        assert store.last_seq() == 4

    def test_unwanted_types_are_skipped_but_advance_last_seq(self, stores: Stores) -> None:
        store = stores.new(StoreSettings(types=frozenset({"a"})))
        store.append_many(make_events(6))
        assert {e.type for e in store.query()} == {"a"}
        assert store.last_seq() == 6

    # ------------------------------------------------------------ retention

    def test_retention_by_ticks(self, stores: Stores) -> None:
        store = stores.new(StoreSettings(retention_ticks=5))
        events = make_events(40, tick=lambda seq: seq)
        store.append_many(events)
        store.prune()
        assert store.query() == [e for e in events if e.tick is not None and e.tick > 35]

    def test_retention_keeps_events_without_tick_until_count_applies(self, stores: Stores) -> None:
        live = StoreSettings(retention_ticks=2)
        store = stores.new(live)
        events = make_events(12, tick=lambda seq: None if seq % 2 else seq)
        store.append_many(events)
        store.prune()
        assert [e.seq for e in store.query()] == [1, 3, 5, 7, 9, 11, 12]
        live.update(retention_count=2)
        store.prune()
        # per type, the two newest survive: a = 3, 9, 12; b = 1, 7; c = 5, 11
        assert [e.seq for e in store.query()] == [1, 5, 7, 9, 11, 12]

    def test_retention_by_count_per_type(self, stores: Stores) -> None:
        store = stores.new(StoreSettings(retention_ticks=None, retention_count=3))
        events = make_events(30)
        store.append_many(events)
        store.prune()
        for event_type in "abc":
            assert store.query(types=[event_type]) == expected(events, types=[event_type])[-3:]
        assert store.summary() == {"a": 3, "b": 3, "c": 3}

    def test_per_type_overrides(self, stores: Stores) -> None:
        live = StoreSettings(
            retention_ticks=4, per_type={"a": {"ticks": None, "count": 2}, "b": {"ticks": 10}}
        )
        store = stores.new(live)
        events = make_events(60, tick=lambda seq: seq)
        store.append_many(events)
        store.prune()
        assert store.query(types=["a"]) == expected(events, types=["a"])[-2:]
        assert store.query(types=["b"]) == expected(events, types=["b"], after_tick=50)
        assert store.query(types=["c"]) == expected(events, types=["c"], after_tick=56)

    def test_settings_change_applies_without_reopening(self, stores: Stores) -> None:
        live = StoreSettings(retention_ticks=None)
        store = stores.new(live)
        events = make_events(50, tick=lambda seq: seq)
        store.append_many(events)
        store.prune()
        assert len(store.query()) == 50
        live.update(retention_ticks=10)
        store.prune()
        assert store.query() == expected(events, after_tick=40)
        live.update(retention_ticks=None, retention_count=1)
        store.prune()
        assert store.summary() == {"a": 1, "b": 1, "c": 1}

    def test_retention_is_applied_while_appending(self, stores: Stores) -> None:
        store = stores.new(StoreSettings(retention_ticks=10))
        for event in make_events(6000, tick=lambda seq: seq):
            store.append(event)
        store.flush()
        ticks = [e.tick for e in store.query() if e.tick is not None]
        # amortized: a prune runs at least every few thousand appends, never only on demand
        assert len(ticks) < 3000
        assert ticks[-1] == 6000
        assert store.statistics().pruned > 3000

    def test_last_seq_survives_pruning_everything(self, stores: Stores) -> None:
        store = stores.new(StoreSettings(retention_ticks=None, retention_count=0))
        store.append_many(make_events(5))
        store.prune()
        assert store.query() == []
        assert store.last_seq() == 5

    # ------------------------------------------------------------ lifecycle

    def test_closed_store_refuses_use(self, stores: Stores) -> None:
        store = stores.new()
        store.append(make_events(1)[0])
        store.close()
        store.close()
        with pytest.raises(ClosedError):
            store.append(make_events(1, start=2)[0])
        with pytest.raises(ClosedError):
            store.query()

    def test_context_manager_closes(self, stores: Stores) -> None:
        with stores.new() as store:
            store.append(make_events(1)[0])
        with pytest.raises(ClosedError):
            store.summary()

    def test_flush_leaves_nothing_pending(self, stores: Stores) -> None:
        store = stores.new()
        for event in make_events(50):
            store.append(event)
        store.flush()
        stats = store.statistics()
        assert stats.pending == 0
        assert stats.stored == 50
        assert stats.appended == 50

    def test_reopen_keeps_events_and_numbering(self, stores: Stores) -> None:
        store = stores.new()
        events = make_events(20)
        store.append_many(events)
        store.clear("a")
        store = stores.reopen(store)
        assert store.query() == [e for e in events if e.type != "a"]
        store.clear()
        store = stores.reopen(store)
        assert store.last_seq() == 20
        nxt = make_events(3, start=21)
        store.append_many(nxt)
        store = stores.reopen(store)
        assert store.query() == nxt
        assert store.last_seq() == 23

    # ------------------------------------------------------------ threads

    def test_appends_and_queries_from_several_threads(self, stores: Stores) -> None:
        store = stores.new(StoreSettings(retention_ticks=None))
        seq_lock = threading.Lock()  # plays the bus: seq assigned and appended in order
        counter = itertools.count(1)
        errors: list[BaseException] = []
        stop = threading.Event()

        def appender() -> None:
            try:
                for _ in range(300):
                    with seq_lock:
                        seq = next(counter)
                        store.append(Event.create("t", {"seq": seq}, seq=seq, tick=seq))
            except BaseException as exc:
                errors.append(exc)

        def reader() -> None:
            try:
                while not stop.is_set():
                    got = store.query(after_tick=0, limit=50, newest=True)
                    seqs = [e.seq for e in got]
                    if seqs:  # a consistent snapshot: contiguous, in order
                        assert seqs == list(range(seqs[0], seqs[-1] + 1))
                    store.summary()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=appender) for _ in range(3)]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads + readers:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        for thread in readers:
            thread.join()
        assert errors == []
        assert [e.seq for e in store.query()] == list(range(1, 901))
