"""Global seq order: breadth-first nesting and emits from many threads."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moonbus.bus import Bus, Event


def _seq_recorder(seen: list[int]) -> Callable[[Event], None]:
    return lambda event: seen.append(event.seq)


def _blocking_handler(inside: threading.Event, release: threading.Event) -> Callable[[Event], None]:
    def handler(event: Event) -> None:
        inside.set()
        release.wait(5)
    return handler


def test_handler_emit_is_delivered_breadth_first(bus: Bus) -> None:
    trace: list[tuple[str, int]] = []
    returned: list[tuple[int, bool]] = []

    def first(event: Event) -> None:
        trace.append(("first", event.seq))
        if event.type == "a":
            for name in ("b", "c"):
                nested = bus.emit(name)
                # A nested emit commits only; its handlers run after this one.
                returned.append((nested.seq, ("second", nested.seq) in trace))

    bus.on("*", first)
    bus.on("*", lambda e: trace.append(("second", e.seq)))
    event = bus.emit("a")
    assert event.seq == 1
    assert trace == [("first", 1), ("second", 1), ("first", 2), ("second", 2),
                     ("first", 3), ("second", 3)]
    assert returned == [(2, False), (3, False)]
    assert [e.seq for e in bus.log()] == [1, 2, 3]


def test_deep_chain_of_nested_emits_keeps_order_and_has_no_recursion() -> None:
    seen: list[int] = []
    # the cascade limits (depth 16, 1,000 events) raised for this chain of 3,000
    bus = Bus(max_cascade_depth=3000, max_cascade_events=3000)

    def relay(event: Event) -> None:
        seen.append(event.seq)
        if event.seq < 3000:  # far beyond the recursion limit if delivery recursed
            bus.emit("relay")

    bus.on("relay", relay)
    bus.emit("relay")
    assert seen == list(range(1, 3001))


def test_nested_emits_reach_later_subscribers_in_seq_order(bus: Bus) -> None:
    # A subscriber registered after the emitting one must not see the nested
    # event before the event that caused it.
    late: list[int] = []
    bus.on("start", lambda e: bus.emit("child", {"parent": e.seq}))
    bus.on("*", lambda e: late.append(e.seq))
    bus.emit("start")
    bus.emit("start")
    assert late == [1, 2, 3, 4]


def test_emits_from_many_threads_reach_every_subscriber_in_seq_order() -> None:
    threads, per_thread = 8, 300
    with Bus() as bus:
        seen: dict[str, list[int]] = defaultdict(list)
        for name in ("exact", "prefix", "star"):
            pattern = {"exact": "work:item", "prefix": "work:*", "star": "*"}[name]
            bus.on(pattern, _seq_recorder(seen[name]))
        barrier = threading.Barrier(threads)
        missing: list[int] = []

        def worker() -> None:
            barrier.wait()
            for _ in range(per_thread):
                event = bus.emit("work:item")
                if event.seq not in seen["star"]:
                    missing.append(event.seq)  # emit returned before its handlers ran

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        total = threads * per_thread
        for name in ("exact", "prefix", "star"):
            assert seen[name] == list(range(1, total + 1)), name
        assert missing == []
        assert [e.seq for e in bus.log()] == list(range(1, total + 1))


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(  # one list of event types per thread
        st.lists(st.sampled_from(["a", "b", "p:x", "p:y"]), min_size=1, max_size=25),
        min_size=1, max_size=6,
    ),
    fanout=st.integers(min_value=0, max_value=2),
    log_size=st.integers(min_value=1, max_value=200),
)
def test_threads_and_nested_emits_property(
    plan: list[list[str]], fanout: int, log_size: int
) -> None:
    """Whatever the interleaving: every subscriber sees strictly increasing seqs,
    nothing lost or duplicated, and the delivery trace is sorted by seq."""
    with Bus(log_size=log_size) as bus:
        lock = threading.Lock()
        per_sub: dict[str, list[int]] = defaultdict(list)
        trace: list[int] = []

        def recorder(name: str) -> Callable[[Event], None]:
            def handler(event: Event) -> None:
                with lock:
                    per_sub[name].append(event.seq)
                    trace.append(event.seq)
            return handler

        def spawner(event: Event) -> None:
            if event.source != "nested":  # each top-level "a" spawns `fanout` nested events
                for _ in range(fanout):
                    bus.emit("p:nested", source="nested")

        bus.on("*", recorder("star"))
        bus.on("a", spawner)
        bus.on("a", recorder("a"))
        bus.on("p:*", recorder("p"))
        bus.once("b", recorder("once-b"))
        bus.on("b", recorder("b"))

        barrier = threading.Barrier(len(plan))
        emitted: list[Event] = []

        def worker(types: list[str]) -> None:
            barrier.wait()
            for name in types:
                event = bus.emit(name)
                with lock:
                    emitted.append(event)

        pool = [threading.Thread(target=worker, args=(types,)) for types in plan]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

        top_level = sum(len(types) for types in plan)
        count_a = sum(types.count("a") for types in plan)
        total = top_level + fanout * count_a
        assert bus.last_seq == total
        assert per_sub["star"] == list(range(1, total + 1))
        for name, seqs in per_sub.items():
            assert seqs == sorted(set(seqs)), name  # strictly increasing
        assert trace == sorted(trace)  # one global delivery order
        assert len({e.seq for e in emitted}) == top_level  # one distinct seq per emit
        by_type = {e.seq: e.type for e in emitted}
        assert per_sub["a"] == sorted(s for s, t in by_type.items() if t == "a")
        assert per_sub["b"] == sorted(s for s, t in by_type.items() if t == "b")
        firsts_b = sorted(s for s, t in by_type.items() if t == "b")[:1]
        assert per_sub["once-b"] == firsts_b
        nested_count = fanout * count_a
        assert len(per_sub["p"]) == nested_count + sum(
            1 for t in by_type.values() if t.startswith("p:"))
        log = bus.log()
        assert [e.seq for e in log] == list(range(max(1, total - log_size + 1), total + 1))
        stats = bus.statistics()
        assert stats.emitted == total
        assert stats.pending == 0


def test_emit_from_another_thread_while_a_handler_runs_waits_for_its_delivery() -> None:
    with Bus() as bus:
        inside = threading.Event()
        release = threading.Event()
        order: list[str] = []

        def slow(event: Event) -> None:
            if event.type == "slow":
                inside.set()
                assert release.wait(5)
            order.append(f"{event.type}:{event.seq}")

        bus.on("*", slow)
        first = threading.Thread(target=bus.emit, args=("slow",))
        first.start()
        assert inside.wait(5)
        result: list[Event] = []
        second = threading.Thread(target=lambda: result.append(bus.emit("fast")))
        second.start()
        second.join(0.2)
        # The second emit waits for the running delivery before it commits, so
        # "fast" can neither overtake "slow" nor return before its handlers ran.
        assert second.is_alive()
        assert bus.last_seq == 1
        assert order == []
        release.set()
        first.join(5)
        second.join(5)
        assert order == ["slow:1", "fast:2"]
        assert result[0].seq == 2


def test_registry_and_log_do_not_wait_for_a_running_handler() -> None:
    import asyncio

    with Bus() as bus:
        inside = threading.Event()
        release = threading.Event()
        bus.on("slow", _blocking_handler(inside, release))
        first = threading.Thread(target=bus.emit, args=("slow",))
        first.start()
        try:
            assert inside.wait(5)
            # All of these run on this thread while the handler blocks the other.
            sub = bus.on("x", print)
            assert sub in bus.subscriptions()
            assert sub.cancel() is True
            assert [e.seq for e in bus.log()] == [1]
            assert bus.statistics().last_seq == 1
            with pytest.raises(TimeoutError):
                asyncio.run(bus.wait_for("x", timeout=0.01))
        finally:
            release.set()
            first.join(5)


def test_close_from_another_thread_waits_for_the_running_delivery() -> None:
    bus = Bus()
    inside = threading.Event()
    release = threading.Event()
    bus.on("slow", _blocking_handler(inside, release))
    first = threading.Thread(target=bus.emit, args=("slow",))
    first.start()
    assert inside.wait(5)
    closer = threading.Thread(target=bus.close)
    closer.start()
    closer.join(0.1)
    assert closer.is_alive() and not bus.closed
    release.set()
    first.join(5)
    closer.join(5)
    assert bus.closed


def test_subscribing_and_cancelling_while_other_threads_emit() -> None:
    with Bus() as bus:
        steady: list[int] = []
        bus.on("*", _seq_recorder(steady))
        churned: list[list[int]] = []
        stop = threading.Event()
        errors: list[BaseException] = []

        def churn() -> None:
            try:
                while not stop.is_set():
                    seen: list[int] = []
                    churned.append(seen)
                    sub = bus.on("w*", _seq_recorder(seen))
                    once = bus.once("*", _seq_recorder(seen))
                    sub.cancel()
                    once.cancel()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def emit_many() -> None:
            for _ in range(2_000):
                bus.emit("work")

        churner = threading.Thread(target=churn)
        churner.start()
        emitters = [threading.Thread(target=emit_many) for _ in range(3)]
        for t in emitters:
            t.start()
        for t in emitters:
            t.join()
        stop.set()
        churner.join()
        assert errors == []
        assert steady == list(range(1, 6_001))
        for seen in churned:
            assert seen == sorted(seen)  # each short-lived subscriber in seq order too
        assert bus.subscriptions()[0].pattern == "*"
        assert len(bus.subscriptions()) == 1
