"""Scheduler workers and the delivery gate (moonbus.host.gate): a worker that
slept until a task was due holds off while the bus delivers, like one that
goes from slice to slice."""

from __future__ import annotations

import time

from tests.host.scheduler_tasks import Once

from moonbus.host.gate import GateMixin, PyGateCounter
from moonbus.host.scheduler import ScriptScheduler

PyDeliveryGate = type("PyDeliveryGate", (GateMixin, PyGateCounter), {})


def test_a_worker_woken_from_its_sleep_holds_off_while_the_bus_delivers() -> None:
    gate = PyDeliveryGate(max_wait=30.0)
    scheduler = ScriptScheduler(gate=gate)  # type: ignore[arg-type]
    scheduler.start(1)
    task = Once()
    try:
        deadline = time.monotonic() + 10
        while scheduler.statistics().waits < 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # the worker is asleep (past gate.hold)
        gate.enter()  # the bus starts delivering
        scheduler.schedule(task, time.monotonic() + 0.05)  # type: ignore[arg-type]
        assert not task.ran.wait(0.5)  # due, but the bus still delivers
        gate.exit()
        assert task.ran.wait(10.0)
    finally:
        if gate.active:
            gate.exit()
        assert scheduler.close(timeout=5.0) == 0
