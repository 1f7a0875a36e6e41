"""Hostile review of the C engine locks under real threads (issue 16):
watchdog aborts while another thread waits on the engine lock, nested
deliveries, unload/close while other threads emit. Runs on both paths
(conftest's delivery_path)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from moonbus.runtime import Runtime

pytestmark = pytest.mark.timeout(60, method="thread")


def _load(rt: Runtime, tmp_path: Path, text: str, name: str) -> Any:
    path = tmp_path / f"{name}.lua"
    path.write_text(text, encoding="utf-8")
    h = rt.load(path)
    h.start()
    return h


def _threads(targets: list[Any], limit: float = 15.0) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a thread hung"


# A handler that spins for ever on {mode = "spin"}, else counts "ok".
SPINNER = """
events:on("p", function(e)
  if e.mode == "spin" then while true do end end
  shared:int("ok"):increment()
end)
"""


def test_watchdog_abort_while_another_thread_waits_for_the_engine(tmp_path: Path) -> None:
    rt = Runtime(threaded=True, workers=2)
    try:
        rt.settings.handler_timeout = 0.2
        h = _load(rt, tmp_path, SPINNER, "spinner")
        started = threading.Event()
        times: dict[str, float] = {}

        def spin() -> None:
            started.set()
            t0 = time.monotonic()
            rt.bus.emit("p", {"mode": "spin"})
            times["spin"] = time.monotonic() - t0

        def waiter() -> None:
            assert started.wait(5)
            time.sleep(0.05)  # the spinner holds the engine lock by now
            t0 = time.monotonic()
            rt.bus.emit("p", {"mode": "ok"})
            times["ok"] = time.monotonic() - t0

        _threads([spin, waiter])
        assert h.shared.int("ok").get() == 1
        assert h.handler_errors == 1 and "time limit" in h.errors[-1]
        assert times["spin"] < 5 and times["ok"] < 5
        rt.bus.emit("p", {"mode": "ok"})
        assert h.shared.int("ok").get() == 2
    finally:
        rt.close()


def test_many_threads_emit_into_one_engine_with_aborts(tmp_path: Path) -> None:
    rt = Runtime(threaded=True, workers=2)
    try:
        rt.settings.handler_timeout = 0.05
        rt.settings.max_handler_timeouts = 10_000
        h = _load(rt, tmp_path, """
events:on("p", function(e)
  if e.n % 25 == 0 then while true do end end
  shared:int("ok"):increment()
end)
""", "many")

        def emitter(base: int) -> Any:
            def run() -> None:
                for i in range(100):
                    rt.bus.emit("p", {"n": base * 1000 + i + 1})
            return run

        _threads([emitter(k) for k in range(6)], limit=40)
        # 6 * 100 events, every 25th spins (n % 25 == 0: 4 per 100)
        assert h.shared.int("ok").get() == 6 * 96
        assert h.handler_errors == 6 * 4
        assert h.status == "running"
    finally:
        rt.close()


def test_nested_emits_reenter_the_engine_deeply(tmp_path: Path) -> None:
    rt = Runtime(threaded=False)
    try:
        h = _load(rt, tmp_path, """
local log = {}
events:on("a", function(e)
  log[#log + 1] = "a" .. e.n .. "@" .. tostring(e.seq ~= nil)
  if e.n < 40 then events:emit("a", {n = e.n + 1}) end
  log[#log + 1] = "/a" .. e.n
  shared:string("out"):set(table.concat(log, ","))
end)
""", "nested")
        rt.bus.emit("a", {"n": 1})
        out = h.shared.string("out").get() or ""
        parts = out.split(",")
        assert len(parts) == 80 or h.errors, (out, h.errors)
        return_errors = [e for e in h.errors if "cascade" not in e and "depth" not in e]
        assert return_errors == []
    finally:
        rt.close()


@pytest.mark.parametrize("round_", range(3))
def test_unload_and_close_while_threads_emit(tmp_path: Path, round_: int) -> None:
    if True:
        rt = Runtime(threaded=True, workers=2)
        rt.settings.handler_timeout = 0.5
        hosts = [_load(rt, tmp_path, """
events:on("p", function(e)
  local x = 0 for i = 1, 2000 do x = x + i end
  shared:int("ok"):increment()
end)
""", f"s{round_}_{i}") for i in range(4)]
        stop = threading.Event()
        errors: list[BaseException] = []

        def emitter() -> None:
            try:
                while not stop.is_set():
                    rt.bus.emit("p", {"x": 1})
            except BaseException as exc:
                if "closed" not in str(exc).lower():
                    errors.append(exc)

        def unloader() -> None:
            time.sleep(0.05)
            for hst in hosts[:2]:
                rt.unload(hst.name)
            time.sleep(0.05)
            rt.close(timeout=10)
            stop.set()

        _threads([emitter, emitter, emitter, unloader], limit=20)
        assert errors == []


def test_keyboard_interrupt_while_an_emit_waits_for_the_engine(tmp_path: Path) -> None:
    # The main thread's emit waits (C: MbLock slow path, GIL released) for the
    # engine held by a spinning handler on another thread; SIGINT interrupts
    # the wait. Afterwards the engine, the bus and the lock must still work.
    import signal

    rt = Runtime(threaded=True, workers=2)
    try:
        rt.settings.handler_timeout = 1.0
        rt.settings.max_handler_timeouts = 100
        h = _load(rt, tmp_path, SPINNER, "kbd")
        started = threading.Event()

        def spin() -> None:
            started.set()
            rt.bus.emit("p", {"mode": "spin"})

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        assert started.wait(5)
        time.sleep(0.1)
        main = threading.get_ident()
        timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
        timer.start()
        interrupted = False
        t0 = time.monotonic()
        try:
            rt.bus.emit("p", {"mode": "ok"})
        except KeyboardInterrupt:
            interrupted = True
        waited = time.monotonic() - t0
        timer.join()
        spinner.join(10)
        assert not spinner.is_alive()
        # the interrupted event may or may not have run; later ones must
        before = h.shared.int("ok").get() or 0
        done = threading.Event()

        def later() -> None:
            for _ in range(5):
                rt.bus.emit("p", {"mode": "ok"})
            done.set()

        threading.Thread(target=later, daemon=True).start()
        assert done.wait(10), "emits hang after an interrupted wait"
        assert h.shared.int("ok").get() == before + 5
        assert interrupted or waited >= 0.5
        assert h.status == "running"
    finally:
        rt.close()


@pytest.mark.parametrize("native", [True, False])
def test_nested_call_from_another_thread_waits_then_runs(tmp_path: Path, native: bool) -> None:
    # A host function called from Lua starts a thread that calls into the
    # same engine, and joins it with a timeout: the other thread must wait
    # for the outer call (not deadlock, not get in), then run.
    from moonbus.lua.sandbox import SandboxFactory

    if True:
        with SandboxFactory(native=native) as factory:
            engine = factory.create("nested")
            try:
                inner = engine.compile("return 2", "inner.lua", engine.new_env())
                results: list[Any] = []
                workers: list[threading.Thread] = []

                def host() -> int:
                    t = threading.Thread(
                        target=lambda: results.append(engine.call(inner, limit=5.0)))
                    workers.append(t)
                    t.start()
                    t.join(0.2)
                    return 1 if t.is_alive() else 0

                env = engine.new_env()
                env["host"] = engine.host_function(host, "host")
                outer = engine.compile("return host()", "outer.lua", env)
                assert engine.call(outer, limit=5.0) == (1,)  # the worker waited
                workers[0].join(5)
                assert results == [(2,)]
            finally:
                engine.close()


@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_polls_handlers_and_host_threads_all_emitting_do_not_deadlock(tmp_path: Path,
                                                                      mode: str) -> None:
    # Lock-order hunt: polls (main engine, worker threads) emit into handlers
    # (event engine) that emit again, while host threads emit too.
    rt = Runtime(threaded=True, workers=2, event_delivery=mode)
    try:
        rt.settings.handler_timeout = 2.0
        hosts = [_load(rt, tmp_path, f"""
function poll()
  for i = 1, 5 do events:emit("x{k}", {{i = i}}) end
  return 2
end
events:on("x{k}", function(e) shared:int("x"):increment() events:emit("y", {{}}) end)
events:on("y", function(e) shared:int("y"):increment() end)
events:on("h", function(e) events:emit("x{1 - k}", {{}}) end)
""", f"p{k}") for k in (0, 1)]
        stop = time.monotonic() + (0.5 if mode == "deferred" else 1.5)

        def host_emitter() -> None:
            while time.monotonic() < stop:
                rt.bus.emit("h", {})
                rt.bus.emit("y", {})
                if mode == "deferred":
                    time.sleep(0.0002)  # bound the backlog the flush must drain

        _threads([host_emitter, host_emitter, host_emitter], limit=20)
        if mode == "deferred":
            assert rt.flush_events(10)
        for h in hosts:
            assert h.status == "running", h.errors
            assert (h.shared.int("y").get() or 0) > 0
    finally:
        t0 = time.monotonic()
        rt.close(timeout=15)
        assert time.monotonic() - t0 < 15
