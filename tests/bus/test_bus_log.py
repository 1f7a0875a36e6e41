"""The bounded in-memory log and its query."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from moonbus.bus import Bus
from moonbus.errors import BusError


def test_default_log_keeps_the_newest_10000_events(bus: Bus) -> None:
    for _ in range(10_005):
        bus.emit("t")
    log = bus.log()
    assert len(log) == 10_000
    assert (log[0].seq, log[-1].seq) == (6, 10_005)
    assert bus.statistics().log_size == 10_000


def test_small_log_drops_the_oldest() -> None:
    with Bus(log_size=3) as bus:
        for name in ("a", "b", "c", "d", "e"):
            bus.emit(name)
        assert [(e.seq, e.type) for e in bus.log()] == [(3, "c"), (4, "d"), (5, "e")]


def test_limit_keeps_the_newest_oldest_first(bus: Bus) -> None:
    for i in range(10):
        bus.emit(f"t{i % 2}")
    assert [e.seq for e in bus.log(limit=3)] == [8, 9, 10]
    assert bus.log(limit=0) == []
    assert [e.seq for e in bus.log(limit=100)] == list(range(1, 11))


def test_after_seq_pages_forward(bus: Bus) -> None:
    for _ in range(10):
        bus.emit("t")
    assert [e.seq for e in bus.log(after_seq=7)] == [8, 9, 10]
    assert [e.seq for e in bus.log(after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in bus.log(after_seq=0, limit=2)] == [1, 2]
    assert bus.log(after_seq=10) == []
    page, cursor, pages = bus.log(after_seq=0, limit=4), 0, []
    while page:
        pages.append([e.seq for e in page])
        cursor = page[-1].seq
        page = bus.log(after_seq=cursor, limit=4)
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_types_filter_accepts_a_list_or_one_name(bus: Bus) -> None:
    for name in ("a", "b", "c", "a", "b"):
        bus.emit(name)
    assert [e.seq for e in bus.log(types=["a", "c"])] == [1, 3, 4]
    assert [e.seq for e in bus.log(types="b")] == [2, 5]
    assert [e.seq for e in bus.log(types=("b",), limit=1)] == [5]
    assert [e.seq for e in bus.log(types=["a"], after_seq=1)] == [4]
    assert bus.log(types=[]) == []


def test_negative_limit_is_rejected(bus: Bus) -> None:
    with pytest.raises(BusError, match="limit"):
        bus.log(limit=-1)


def test_log_returns_a_copy(bus: Bus) -> None:
    bus.emit("a")
    log = bus.log()
    log.clear()
    assert len(bus.log()) == 1


@example(names=list("abcab"), log_size=50, limit=7, after_seq=None, types=None)
@example(names=list("abcab"), log_size=4, limit=3, after_seq=1, types=["a", "b"])
@given(
    names=st.lists(st.sampled_from("abc"), max_size=40),
    log_size=st.integers(1, 50),
    limit=st.none() | st.integers(0, 45),
    after_seq=st.none() | st.integers(0, 45),
    types=st.none() | st.lists(st.sampled_from("abc"), max_size=3),
)
def test_log_query_matches_a_plain_model(
    names: list[str], log_size: int, limit: int | None, after_seq: int | None,
    types: list[str] | None,
) -> None:
    with Bus(log_size=log_size) as bus:
        for name in names:
            bus.emit(name)
        model = [(i + 1, n) for i, n in enumerate(names)][-log_size:]
        if after_seq is not None:
            model = [m for m in model if m[0] > after_seq]
        if types is not None:
            model = [m for m in model if m[1] in types]
        if limit is not None:
            newest = model[max(0, len(model) - limit):]
            model = model[:limit] if after_seq is not None else newest
        got = bus.log(limit=limit, after_seq=after_seq, types=types)
        assert [(e.seq, e.type) for e in got] == model
