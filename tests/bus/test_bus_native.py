"""The C fast path of ``emit``: which bus gets it, and that it hands off cleanly."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from moonbus.bus import Bus
from moonbus.bus.core import PyEmitState, native_available
from moonbus.bus.event import Event
from moonbus.errors import ClosedError


def test_path_follows_the_switch(emit_path: str) -> None:
    with Bus() as bus:
        if emit_path == "python":
            assert isinstance(bus._core, PyEmitState)
            assert "emit" not in vars(bus)
        else:
            assert not isinstance(bus._core, PyEmitState)
            assert vars(bus)["emit"] is bus._core


def test_native_false_gives_the_python_path() -> None:
    with Bus(native=False) as bus:
        assert isinstance(bus._core, PyEmitState)


@pytest.mark.skipif(not native_available(), reason="the C fast path is not built")
def test_core_refuses_bad_wiring() -> None:
    from moonbus.bus._fastemit import EmitCore

    with pytest.raises(TypeError, match="tuple subclass"):
        EmitCore(
            event_type=dict, type_names=set(), lock=threading.RLock(), clock=None,
            store=None, log=[], pending=[], gate=None, waiters=None, routes={},
            default_source="x", empty_data={}, handler_failed=print,
            drain_pending=print, general=print, seq=0,
        )


def test_first_emit_of_a_type_then_fast_emits_agree(bus: Bus) -> None:
    seen: list[Event] = []
    bus.on("a", seen.append)
    events = [bus.emit("a", {"i": i, "f": 1.5, "s": "x", "b": True, "n": None}, tick=i)
              for i in range(5)]
    assert seen == events
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(type(e) is Event for e in events)
    assert events[3].data == {"i": 3, "f": 1.5, "s": "x", "b": True, "n": None}
    assert events[3].tick == 3 and events[3].source == "host"
    with pytest.raises(TypeError):
        events[3].data["i"] = 9  # type: ignore[index]
    assert bus.log() == events
    assert bus.statistics().delivered == 5


def test_data_is_copied_at_emit(bus: Bus) -> None:
    bus.emit("a")
    payload: dict[str, object] = {"x": 1}
    event = bus.emit("a", payload)
    payload["x"] = 2
    assert event.data == {"x": 1}
    assert bus.emit("a", {}).data == {}
    assert bus.emit("a", None).data == {}


def test_nested_emits_from_a_fast_delivery_stay_in_order(bus: Bus) -> None:
    order: list[tuple[str, int]] = []

    def on_a(event: Event) -> None:
        order.append(("a", event.seq))
        if event.data["depth"] < 2:
            bus.emit("a", {"depth": event.data["depth"] + 1})
            bus.emit("b", {"depth": 0})

    bus.on("a", on_a)
    bus.on("b", lambda e: order.append(("b", e.seq)))
    bus.emit("a", {"depth": 0})
    bus.emit("a", {"depth": 0})  # the fast path again, after a drain
    seqs = [seq for _, seq in order]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert len(order) == 10


def test_a_raising_handler_is_logged_counted_and_isolated(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []

    def broken(event: Event) -> None:
        raise ValueError("boom")

    sub = bus.on("a", broken)
    bus.on("a", lambda e: got.append(e.seq))
    bus.emit("a")
    with caplog.at_level(logging.ERROR, logger="moonbus.bus"):
        event = bus.emit("a")
    assert got == [1, 2]
    assert sub.errors == 2 and bus.statistics().handler_errors == 2
    record = caplog.records[-1]
    assert f"seq={event.seq}" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_a_base_exception_propagates_and_leaves_the_bus_usable(bus: Bus) -> None:
    calls: list[int] = []

    def interrupt(event: Event) -> None:
        calls.append(event.seq)
        if event.seq == 2:
            raise KeyboardInterrupt

    bus.on("a", interrupt)
    bus.emit("a")
    with pytest.raises(KeyboardInterrupt):
        bus.emit("a")
    assert bus.emit("a").seq == 3
    assert calls == [1, 2, 3]
    assert not bus._core.draining and bus._core.in_flight is None


def test_closed_bus_refuses(bus: Bus) -> None:
    bus.emit("a")
    bus.close()
    with pytest.raises(ClosedError):
        bus.emit("a")


def test_custom_clock_and_source() -> None:
    with Bus(clock=lambda: 12.3456, default_source="game") as bus:
        bus.emit("a")
        event = bus.emit("a", {"k": "v"}, source="npc")
        assert event.ts == 12345 and event.source == "npc"
        assert bus.emit("a").source == "game"


def test_threads_share_one_gap_free_order(bus: Bus) -> None:
    seen: list[int] = []
    bus.on("a", lambda e: seen.append(e.seq))
    bus.emit("a")

    def worker() -> None:
        for i in range(2_000):
            bus.emit("a", {"i": i})

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == list(range(1, 8_002))
    assert [e.seq for e in bus.log(limit=5)] == list(range(7_997, 8_002))


def test_every_way_of_calling_emit(bus: Bus) -> None:
    bus.emit("a")
    assert bus.emit("a", {"k": 1}).data == {"k": 1}
    assert bus.emit("a", data={"k": 2}).data == {"k": 2}
    assert bus.emit(type="a").type == "a"
    assert bus.emit("a", None, tick=7, source="s").tick == 7
    event = bus.emit("a", {"nested": {"x": [1, 2]}}, tick=3)
    assert event.data["nested"]["x"] == (1, 2) and event.tick == 3
    with pytest.raises(TypeError):
        bus.emit("a", {}, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        bus.emit()  # type: ignore[call-arg]
    assert bus.last_seq == 6


def test_ci_builds_the_c_fast_path() -> None:
    # optional=True lets a machine without a compiler install moonbus; CI has
    # one, so there a missing extension is a build failure, not a fallback.
    if os.environ.get("CI") == "true" and not os.environ.get("MOONBUS_PURE_PYTHON"):
        from moonbus.bus import core
        from moonbus.native import load_fast_path

        assert load_fast_path(core.FAST_EMIT).on, load_fast_path(core.FAST_EMIT).reason
