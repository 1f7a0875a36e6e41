"""Containment of the script lifecycle and scheduler (SPEC §4b): stop always
wins, numbers from scripts and operators are checked, the sleep marker never
leaks, stop() from a subscriber never deadlocks, close() runs every step.

Each test runs the attack beside a well-behaved companion script where that
makes sense and asserts: the host call returns within a generous bound, the
companion kept polling and receiving events, the offender ended with an
error naming the cause, and the counter moved.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from moonbus.errors import AdminError, ConfigError
from moonbus.host.context import HostSettings
from moonbus.host.scheduler import ScriptScheduler
from moonbus.lua.fastcall import native_available
from tests.adversarial.support_lifecycle import (
    COMPANION,
    companion_alive,
    load,
    runtime,
    timed,
    wait_until,
)
from tests.native_paths import both_paths

delivery_path = both_paths(native_available())
MODES = ["immediate", "deferred"]

# --------------------------------------------------------------- stop always wins

HOSTILE_STOPS = {
    "pcall around sleep in poll": (
        "function poll() shared:bool('busy'):set(true) while true do pcall(sleep, 10) end end",
        "poll", "sleep() again after 'script stopped'",
    ),
    "pcall around sleep in on_stop": (
        "function poll() return 10 end\n"
        "function on_stop() while true do pcall(sleep, 10) end end",
        "on_stop", "sleep() again after 'script stopped'",
    ),
    "cpu loop after catching the stop": (
        "function poll() shared:bool('busy'):set(true) pcall(sleep, 100000) while true do end"
        " end",
        "poll", "kept running after the stop",
    ),
    "cpu loop in on_stop": (
        "function poll() return 10 end\nfunction on_stop() while true do end end",
        "on_stop", "kept running after the stop",
    ),
    "pcall around sleep in a deferred handler": (
        "function on_start() events:on('d', function() shared:bool('busy'):set(true)"
        " while true do pcall(sleep, 10) end end) end\nfunction poll() return 10 end",
        "deferred handler", "sleep() again after 'script stopped'",
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attack", sorted(HOSTILE_STOPS))
def test_stop_wins_over_hostile_code(tmp_path: Path, mode: str, attack: str) -> None:
    source, where, cause = HOSTILE_STOPS[attack]
    with runtime(mode) as rt:
        companion = load(rt, tmp_path, "companion", COMPANION)
        bad = load(rt, tmp_path, "bad", source)
        assert wait_until(lambda: bad.status == "running")
        rt.bus.emit("d")  # starts the hostile deferred handler (when it has one)
        if "busy" in source:  # the hostile code is running before the stop
            assert wait_until(lambda: bad.shared.bool("busy").get() is True)
        took = timed(lambda: bad.stop(timeout=5), bound=7.0)
        assert took < 7.0
        assert bad.status == "failed", bad.errors
        assert any(e.startswith(where) and cause in e for e in bad.errors), bad.errors
        assert rt.lifecycle_statistics().stop_aborts == 1
        assert companion_alive(rt, companion)
        assert companion.status == "running"


@pytest.mark.parametrize("mode", MODES)
def test_close_returns_with_hostile_scripts_running(tmp_path: Path, mode: str) -> None:
    rt = runtime(mode)
    for i, (source, _, _) in enumerate(HOSTILE_STOPS.values()):
        load(rt, tmp_path, f"bad{i}", source)
    load(rt, tmp_path, "companion", COMPANION)
    assert wait_until(lambda: all(h.status == "running" for h in rt.scripts.values()))
    rt.bus.emit("d")
    timed(rt.close, bound=15.0)
    assert all(h.status in ("stopped", "failed") for h in rt.scripts.values())
    assert rt.scripts["companion"].status == "stopped"
    assert rt.scheduler.statistics().workers_alive == 0


def test_a_script_that_sleeps_once_in_on_stop_still_stops_cleanly(tmp_path: Path) -> None:
    with runtime() as rt:
        h = load(rt, tmp_path, "s", "function poll() return 10 end\n"
                 "function on_stop() local ok = pcall(sleep, 50) shared:bool('done'):set(true) end")
        assert wait_until(lambda: h.status == "running")
        h.stop(timeout=5)
        assert h.status == "stopped", h.errors
        assert h.shared.bool("done").get() is True
        assert rt.lifecycle_statistics().stop_aborts == 0


# ------------------------------------------------------ numbers from scripts


@pytest.mark.parametrize("mode", MODES)
def test_huge_and_nan_delays_never_kill_a_worker(tmp_path: Path, mode: str) -> None:
    with runtime(mode) as rt:
        companion = load(rt, tmp_path, "companion", COMPANION)
        bad = [
            *(load(rt, tmp_path, f"huge{i}", "function poll() return math.huge end")
              for i in range(5)),
            load(rt, tmp_path, "big", "function poll() return 1e300 end"),
            load(rt, tmp_path, "sleepy", "function poll() sleep(1e13) end"),
            load(rt, tmp_path, "negative", "function poll() shared:int('n'):increment() "
                 "return -5 end"),
            load(rt, tmp_path, "nan", "function poll() return 0/0 end"),
            load(rt, tmp_path, "nansleep", "function poll() sleep(0/0) end"),
        ]
        hosts = {h.name: h for h in bad}
        assert wait_until(lambda: hosts["nan"].status == "failed"
                          and hosts["nansleep"].status == "failed")
        assert "nan" in hosts["nan"].errors[0] and "invalid delay" in hosts["nan"].errors[0]
        assert "delay is nan" in hosts["nansleep"].errors[0]
        assert hosts["negative"].shared.int("n").get() > 1  # negative: at once, not never
        assert companion_alive(rt, companion)
        stats = rt.scheduler.statistics()
        assert stats.workers_alive == stats.workers == 2
        assert stats.job_exceptions == stats.worker_errors == 0
        lifecycle = rt.lifecycle_statistics()
        assert lifecycle.clamped_numbers >= 8 and lifecycle.refused_numbers >= 2
        warnings = [line.msg for line in rt.recent_logs if line.level == "warn"]
        assert any("over max_poll_delay" in w and "inf" in w for w in warnings)
        for h in bad:  # every one still stops at once
            timed(lambda h=h: h.stop(timeout=5), bound=7.0)


def test_host_settings_refuse_bad_numbers() -> None:
    settings = HostSettings()
    for value in (math.nan, math.inf, -1.0, 0.0, 1e13):
        with pytest.raises(ConfigError, match="poll_delay"):
            settings.poll_delay = value
    with pytest.raises(ConfigError, match="lifecycle_timeout"):
        HostSettings(lifecycle_timeout=math.inf)
    assert settings.poll_delay == 0.1


@pytest.mark.parametrize(
    ("key", "value"),
    [("poll_delay_ms", "1e13"), ("handler_timeout_ms", "nan"), ("handler_timeout_ms", "inf"),
     ("lifecycle_timeout_ms", "-5"), ("max_poll_delay_ms", "inf"), ("max_poll_failures", "0")],
)
def test_settings_set_refuses_bad_numbers(tmp_path: Path, key: str, value: str) -> None:
    with runtime() as rt:
        companion = load(rt, tmp_path, "companion", COMPANION)
        before = rt.admin.run("settings")
        with pytest.raises(AdminError, match=f"{key}.*{value}"):
            rt.admin.run(f"settings.set {key} {value}")
        assert rt.admin.run("settings") == before
        assert rt.lifecycle_statistics().refused_numbers == 1
        assert companion_alive(rt, companion)
        assert rt.scheduler.statistics().workers_alive == 2


def test_scheduler_workers_survive_bad_jobs() -> None:
    class Job:
        def __init__(self, result: object) -> None:
            self.result = result
            self.runs = 0

        def run_slice(self, now: float) -> float | None:
            self.runs += 1
            if isinstance(self.result, Exception):
                raise self.result
            return self.result  # type: ignore[return-value]

    class Good:
        def __init__(self) -> None:
            self.runs = 0

        def run_slice(self, now: float) -> float | None:
            self.runs += 1
            return now + 0.01

    scheduler = ScriptScheduler()
    scheduler.start(2)
    try:
        bad = [Job(math.nan), Job(math.inf), Job(-math.inf), Job(RuntimeError("bug"))]
        good = Good()
        for job in [*bad, good]:
            scheduler.wake(job)  # type: ignore[arg-type]
        assert wait_until(lambda: good.runs > 20)
        stats = scheduler.statistics()
        assert stats.workers_alive == 2
        assert stats.job_exceptions >= 1 and stats.bad_due_times >= 3
    finally:
        assert scheduler.close(timeout=5.0) == 0


# ---------------------------------------------------------- the sleep marker


def test_the_sleep_marker_never_reaches_the_script(tmp_path: Path) -> None:
    leak = """
    function poll()
      local co = coroutine.create(function() sleep(5) end)
      local marker
      string.gsub("a", "a", function() local ok, m = coroutine.resume(co) marker = m end)
      shared:string("leaked"):set(tostring(marker))
      coroutine.yield(marker, "abc")
    end
    """
    with runtime() as rt:
        companion = load(rt, tmp_path, "companion", COMPANION)
        h = load(rt, tmp_path, "leak", leak)
        assert wait_until(lambda: h.status == "failed")
        assert "sleep() cannot wait here" in h.errors[0]
        assert "consecutive poll failures" in h.errors[-1]
        assert h.shared.string("leaked").get() == ""
        assert companion_alive(rt, companion)
        assert rt.scheduler.statistics().job_exceptions == 0


def test_a_bare_yield_in_poll_is_a_script_error(tmp_path: Path) -> None:
    with runtime() as rt:
        h = load(rt, tmp_path, "y", 'function poll() coroutine.yield({}, "abc") end')
        assert wait_until(lambda: h.status == "failed")
        assert "coroutine.yield() outside a coroutine" in h.errors[0]
        assert rt.scheduler.statistics().job_exceptions == 0


# ------------------------------------------------- stop from a subscriber


@pytest.mark.parametrize("mode", MODES)
def test_a_subscriber_stopping_an_emitting_script_does_not_deadlock(
    tmp_path: Path, mode: str
) -> None:
    with runtime(mode) as rt:
        h = load(rt, tmp_path, "emitter",
                 "function poll() for i = 1, 50 do events:emit('y', {i = i}) end return 0 end")
        assert wait_until(lambda: h.status == "running")
        stopped: list[float] = []

        def subscriber(event: object) -> None:
            start = time.monotonic()
            h.stop()  # wait=True by default: must not wait on this delivering thread
            stopped.append(time.monotonic() - start)

        rt.bus.on("x", subscriber)

        def emit_x() -> None:
            for _ in range(200):
                if h.status in ("stopped", "failed"):
                    break
                rt.bus.emit("x")

        timed(emit_x, bound=10.0)
        assert h.wait(5.0) == "stopped", h.errors
        assert stopped and max(stopped) < 1.0


def test_stop_from_the_script_own_host_api_returns(tmp_path: Path) -> None:
    with runtime() as rt:
        holder: list[object] = []

        class Api:
            def quit(self) -> None:
                holder[0].stop()  # type: ignore[attr-defined]

        from moonbus.lua.exposure import lua_api

        rt.register_api("game", lua_api(Api)())
        h = load(rt, tmp_path, "q", "function poll() game:quit() return 10 end")
        holder.append(h)
        assert h.wait(5.0) == "stopped", h.errors


# ------------------------------------------------------------- Runtime.close


def test_close_runs_every_step_when_one_fails(tmp_path: Path) -> None:
    class Owned:
        closed = False

        def close(self) -> None:
            self.closed = True

    rt = runtime()
    owned = Owned()
    rt._owned.insert(0, owned)  # closed last, after the failing step
    load(rt, tmp_path, "companion", COMPANION)

    def broken_close(timeout: float = 10.0) -> int:
        raise RuntimeError("scheduler close failed")

    real_close = rt.scheduler.close
    rt.scheduler.close = broken_close  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="scheduler close failed") as info:
        rt.close()
    assert owned.closed
    assert rt.bus.closed
    assert any("stopping the scheduler" in note for note in info.value.__notes__)
    real_close(timeout=5.0)


def test_a_thread_that_does_not_end_is_counted() -> None:
    release = threading.Event()

    class Stuck:
        def run_slice(self, now: float) -> float | None:
            release.wait(10.0)
            return None

    scheduler = ScriptScheduler()
    scheduler.start(1)
    stuck = Stuck()
    scheduler.wake(stuck)  # type: ignore[arg-type]
    time.sleep(0.05)
    try:
        assert timed(lambda: scheduler.close(timeout=0.2), bound=5.0) < 5.0
        assert scheduler.statistics().threads_not_ended == 1
    finally:
        release.set()


# ------------------------------------------------------------- moonbus run


@pytest.mark.parametrize("tick_ms", ["0", "20"])  # virtual time (stepped) and real time
def test_moonbus_run_exits_with_a_script_that_swallows_its_stop(
    tmp_path: Path, tick_ms: str
) -> None:
    script = tmp_path / "stubborn.lua"
    script.write_text("function poll() while true do pcall(sleep, 10) end end\n"
                      "function on_stop() while true do pcall(sleep, 10) end end\n")
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "moonbus", "run", str(script), "--ticks", "5",
         "--tick-ms", tick_ms, "--summary", "out.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr  # exit 1: a script failed
    assert "sleep() again after 'script stopped'" in done.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["scripts"]["stubborn"]["status"] == "failed"
