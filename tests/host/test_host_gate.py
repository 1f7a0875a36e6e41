"""Handlers before polls: the delivery gate (moonbus.host.gate)."""

from __future__ import annotations

import threading
import time

from moonbus.bus import Bus
from moonbus.host.gate import DeliveryGate


def test_hold_returns_at_once_when_idle() -> None:
    gate = DeliveryGate(max_wait=5.0)
    started = time.monotonic()
    gate.hold()
    assert time.monotonic() - started < 0.5


def test_a_worker_waits_until_delivery_ends() -> None:
    gate = DeliveryGate(max_wait=5.0)
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


def test_the_wait_is_bounded_so_polls_are_never_starved() -> None:
    gate = DeliveryGate(max_wait=0.05)
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
