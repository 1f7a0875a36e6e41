"""The time limit is CPU time: waiting (GIL, host APIs) does not count."""

from __future__ import annotations

import threading
import time

import pytest

from moonbus.errors import ScriptTimeout
from moonbus.lua.sandbox import SandboxFactory
from moonbus.lua.watchdog import Watchdog, thread_cpu_time


def test_thread_cpu_time_reads_this_thread_and_refuses_unknown_ids() -> None:
    used = thread_cpu_time(threading.get_native_id())
    assert used is not None and used >= 0
    assert thread_cpu_time(2**22 - 3) is None  # no such thread


def test_a_call_that_waits_in_a_host_api_is_not_aborted() -> None:
    with SandboxFactory() as factory:
        engine = factory.create("waiter")
        env = engine.new_env()
        env["wait"] = lambda seconds: time.sleep(seconds)  # a slow host API: no CPU
        chunk = engine.compile("wait(0.3) return 'done'", "waiter.lua", env)
        assert engine.call(chunk, limit=0.1) == ("done",)
        engine.close()


def test_a_call_that_computes_is_still_aborted_on_time() -> None:
    with SandboxFactory() as factory:
        engine = factory.create("spinner")
        env = engine.new_env()
        chunk = engine.compile("while true do end", "spin.lua", env)
        started = time.monotonic()
        with pytest.raises(ScriptTimeout):
            engine.call(chunk, limit=0.1)
        assert time.monotonic() - started < 2.0
        engine.close()


def test_wall_clock_is_the_fallback_without_cpu_clocks() -> None:
    watchdog = Watchdog(cpu_clock=lambda native_id: None)
    try:
        with SandboxFactory(watchdog=watchdog) as factory:
            engine = factory.create("fallback")
            env = engine.new_env()
            env["wait"] = lambda seconds: time.sleep(seconds)
            chunk = engine.compile("wait(0.3) while true do end", "w.lua", env)
            with pytest.raises(ScriptTimeout):
                engine.call(chunk, limit=0.1)
            engine.close()
    finally:
        watchdog.close()


class _Target:
    def __init__(self) -> None:
        self.aborted: list[int] = []

    def abort(self, token: int, reason: str) -> bool:
        self.aborted.append(token)
        return True


def test_a_starved_watchdog_does_not_charge_its_own_delay_as_cpu() -> None:
    cpu = {"now": 10.0}
    watchdog = Watchdog(period=0.002, clock=lambda: 0.0, cpu_clock=lambda native_id: cpu["now"])
    try:
        target = _Target()
        watchdog.armed[target] = (0.0, 0.1, 7, 1234)  # started at 0, budget 100 ms
        watchdog._scan(0.5)  # first look only 500 ms later (watchdog starved)
        assert target.aborted == []  # the call may have been waiting too: not charged
        cpu["now"] = 10.05
        watchdog._scan(0.6)  # 50 ms of real CPU since the sample: still under budget
        assert target.aborted == []
        cpu["now"] = 10.2
        watchdog._scan(0.7)  # now it has computed past its budget
        assert target.aborted == [7]
    finally:
        watchdog.armed.clear()
        watchdog.close()
