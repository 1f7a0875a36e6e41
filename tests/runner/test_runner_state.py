"""Fresh environments per job, persistent named states, and the environment builder."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from runner_helpers import SPIN, wait_in_lua

from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import Runner
from moonbus.runner import worker as worker_module
from moonbus.runner.env_builder import GENERATOR

POLLUTE = """
x = 1
_G.y = 2
string.polluted = true
math.pi = 3
table.insert = nil
os.time = nil
coroutine.extra = 1
load("z = 3")()
setmetatable(_G, {__index = function() return 42 end})
return x + y + z
"""

INSPECT = """
return x, y, z, string.polluted, math.pi > 3.14, table.insert ~= nil, os.time ~= nil,
  coroutine.extra, getmetatable(_G), undefined_name
"""


def test_no_globals_leak_between_jobs(runner1: Runner) -> None:
    assert runner1.submit(POLLUTE).result(timeout=5) == 6
    assert runner1.submit(INSPECT).result(timeout=5) == (
        None, None, None, None, True, True, True, None, None, None,
    )


def test_no_leak_through_a_failed_or_timed_out_job(runner1: Runner) -> None:
    runner1.submit("leak = 1 error('x')").exception(timeout=5)
    runner1.submit("leak2 = 1 while true do end", timeout=0.02).exception(timeout=5)
    assert runner1.submit("return leak, leak2").result(timeout=5) == (None, None)


def test_same_source_does_not_share_locals_between_jobs(runner1: Runner) -> None:
    source = "counter = (counter or 0) + 1 local n = 0 n = n + 1 return counter, n"
    assert [runner1.submit(source).result(timeout=5) for _ in range(3)] == [(1, 1)] * 3


def test_persistent_state_keeps_its_globals(runner: Runner) -> None:
    source = "count = (count or 0) + (...) return count"
    results = [runner.submit(source, args=(i,), state="npc-ai").result(timeout=5)
               for i in range(1, 5)]
    assert results == [1, 3, 6, 10]
    assert runner.submit(source, args=(1,), state="other").result(timeout=5) == 1
    assert runner.submit("return count").result(timeout=5) is None
    assert runner.statistics().states == 2


def test_state_functions_survive(runner: Runner) -> None:
    runner.submit("function greet(n) return 'hi ' .. n end", state="lib").result(timeout=5)
    assert runner.submit("return greet(...)", args=("bob",), state="lib").result(timeout=5) == (
        "hi bob"
    )


def test_jobs_of_one_state_run_in_order(runner: Runner) -> None:
    futures = [runner.submit("log = (log or '') .. (...) return log", args=(str(i),),
                             state="seq") for i in range(20)]
    assert futures[-1].result(timeout=5) == "".join(str(i) for i in range(20))


def test_states_are_spread_over_workers(runner: Runner) -> None:
    blocker = runner.submit(SPIN, timeout=30, state="a")
    wait_in_lua(blocker)
    # "b" is pinned to the other worker, so it runs while "a" is busy
    assert runner.submit("return 'b'", state="b").result(timeout=5) == "b"
    assert blocker.cancel()
    assert runner.submit("return 'a'", state="a").result(timeout=5) == "a"


def test_state_survives_a_failed_job(runner1: Runner) -> None:
    runner1.submit("kept = 5", state="s").result(timeout=5)
    runner1.submit("kept = kept + 1 error('after the change')", state="s").exception(timeout=5)
    assert runner1.submit("return kept", state="s").result(timeout=5) == 6


def test_drop_state(runner: Runner) -> None:
    source = "n = (n or 0) + 1 return n"
    runner.submit(source, state="s").result(timeout=5)
    assert runner.submit(source, state="s").result(timeout=5) == 2
    assert runner.drop_state("s").result(timeout=5) is True
    assert runner.statistics().states == 0
    assert runner.submit(source, state="s").result(timeout=5) == 1
    assert runner.drop_state("never-used").result(timeout=5) is False


def test_drop_state_does_not_count_as_a_job(runner1: Runner) -> None:
    runner1.submit("return 1", state="s").result(timeout=5)
    runner1.drop_state("s").result(timeout=5)
    stats = runner1.statistics()
    assert (stats.submitted, stats.done) == (1, 1)


# ------------------------------------------------------------ environment builder
LISTING = """
local out = {}
for k, v in pairs(_G) do
  if type(v) == "table" and k ~= "_G" then
    for kk, vv in pairs(v) do out[#out + 1] = k .. "." .. kk .. ":" .. type(vv) end
  else
    out[#out + 1] = k .. ":" .. type(v)
  end
end
table.sort(out)
return table.concat(out, " ")
"""


def test_job_environment_matches_the_sandbox_environment(
    runner1: Runner, factory: SandboxFactory
) -> None:
    engine = factory.create("reference")
    try:
        env = engine.new_env()
        (expected,) = engine.call(engine.compile(LISTING, "job", env), limit=1.0)
    finally:
        engine.close()
    assert runner1.submit(LISTING).result(timeout=5) == expected
    assert runner1._workers[0].env_builder_problem is None


def test_builder_load_defaults_to_the_job_environment(runner1: Runner) -> None:
    source = "load('g = 1')() local t = {} load('g = 2', 'c', 't', t)() return g, t.g"
    assert runner1.submit(source).result(timeout=5) == (1, 2)
    assert "only text chunks" in str(runner1.submit("local f = load(5)").exception(timeout=5))


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("T1.extra = function() end T2.extra = function() end", "extra differs"),
        ("T1.lib = {} T2.lib = T1.lib", "lib is one table shared"),
        ("T1.lib = {t = {}} T2.lib = {t = T1.lib.t}", "lib.t is not one shared value"),
        ("setmetatable(T1.string, {})", "string has a metatable"),
        ("T1.only = 1", "exists in only one environment"),
        ("setmetatable(T1, {})", "environments have a metatable"),
    ],
)
def test_generator_refuses_shapes_it_cannot_reproduce(
    factory: SandboxFactory, setup: str, reason: str
) -> None:
    engine = factory.create("gen")
    try:
        # As a worker does: the lazy string functions loaded, environments are plain.
        engine.call(engine.compile("local _ = string.find", "preload", engine.new_env()),
                    limit=1.0)
        first, second = engine.new_env(), engine.new_env()
        tweak = engine.compile(f"local T1, T2 = ... {setup}", "tweak", engine.new_env())
        engine.call(tweak, first, second, limit=1.0)
        generator = engine.compile(GENERATOR, "gen", engine.new_env())
        values = engine.call(generator, first, second, limit=1.0)
    finally:
        engine.close()
    assert values[0] is None
    assert reason in values[1]


def test_runner_falls_back_to_new_env_when_the_builder_cannot_be_used(
    factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(engine: Any, blank: Any) -> tuple[None, str]:
        return None, "refused for the test"

    monkeypatch.setattr(worker_module, "make_builder", refuse)
    with caplog.at_level(logging.WARNING), Runner(workers=1, factory=factory) as fallback:
        assert fallback._workers[0].env_builder_problem == "refused for the test"
        assert fallback.submit(POLLUTE).result(timeout=5) == 6
        assert fallback.submit("return x, string.polluted").result(timeout=5) == (None, None)
    assert "refused for the test" in caplog.text


def test_a_cancelled_drop_still_forgets_the_state(runner1: Runner) -> None:
    blocker = runner1.submit(SPIN, timeout=30)
    wait_in_lua(blocker)
    runner1.submit("n = 41", state="s")
    drop = runner1.drop_state("s")
    assert drop.cancel() is True
    blocker.cancel()
    assert runner1.submit("return n", state="s").result(timeout=5) is None
