"""Handlers before polls: the delivery gate (moonbus.host.gate)."""

from __future__ import annotations

import threading
import time

import pytest

from moonbus.bus import Bus
from moonbus.host.gate import DeliveryGate, GateMixin, PyGateCounter

# The gate over its C counter (when built) and over the Python one.
PyDeliveryGate = type("PyDeliveryGate", (GateMixin, PyGateCounter), {})
GATES = sorted({DeliveryGate, PyDeliveryGate}, key=lambda cls: cls.__name__)


@pytest.fixture(params=GATES, ids=lambda cls: cls.__name__)
def gate_type(request: pytest.FixtureRequest) -> type[DeliveryGate]:
    gate: type[DeliveryGate] = request.param
    return gate


def test_hold_returns_at_once_when_idle(gate_type: type[DeliveryGate]) -> None:
    gate = gate_type(max_wait=5.0)
    started = time.monotonic()
    gate.hold()
    assert time.monotonic() - started < 0.5


def test_a_worker_waits_until_delivery_ends(gate_type: type[DeliveryGate]) -> None:
    gate = gate_type(max_wait=5.0)
    gate.enter()
    released = threading.Event()

    def worker() -> None:
        gate.hold()
        released.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert not released.wait(0.1)  # still delivering: the worker holds off
    gate.exit()
    assert released.wait(2.0)
    thread.join()


def test_the_wait_is_bounded_so_polls_are_never_starved(gate_type: type[DeliveryGate]) -> None:
    gate = gate_type(max_wait=0.05)
    gate.enter()
    started = time.monotonic()
    gate.hold()
    assert time.monotonic() - started < 1.0
    gate.exit()


def test_the_bus_brackets_each_drain_with_the_gate() -> None:
    calls: list[str] = []

    class Recorder:
        active = 0

        def enter(self) -> None:
            calls.append("enter")

        def exit(self) -> None:
            calls.append("exit")

    bus = Bus(gate=Recorder())
    bus.on("a", lambda e: (calls.append("handler a"), bus.emit("b")))
    bus.on("b", lambda e: calls.append("handler b"))
    bus.emit("a")
    assert calls == ["enter", "handler a", "handler b", "exit"]


def test_the_counter_counts_and_wakes_only_when_the_last_drain_ends(
    gate_type: type[DeliveryGate],
) -> None:
    woken: list[int] = []
    gate = gate_type(max_wait=5.0)
    gate._wake = lambda: woken.append(gate.active)  # type: ignore[method-assign]
    gate.enter()
    gate.enter()
    gate.exit()
    assert (gate.active, woken) == (1, [])  # nobody waits yet
    gate.waiting = 1
    gate.exit()
    assert (gate.active, woken) == (0, [0])


@pytest.mark.parametrize("native", [True, False])
def test_a_bus_counts_its_drains_on_the_gate(gate_type: type[DeliveryGate], native: bool) -> None:
    gate = gate_type(max_wait=5.0)
    seen: list[int] = []
    bus = Bus(gate=gate, native=native)
    bus.on("a", lambda e: seen.append(gate.active))
    bus.emit("a")
    bus.emit("a")
    assert seen == [1, 1] and gate.active == 0
