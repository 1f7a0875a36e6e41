"""Script engines' Lua objects in arena chunks (``moonbus.lua.arena``, ``_arena.c``).

The arena must be invisible to scripts and to every limit: the same results,
the same memory account (lupa's ``get_memory_used``), the same point where
an allocation fails; only where the blocks lie differs. Each test compares a
factory with arenas against one without (``arena_bytes=None``) where it can.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.lua.test_sandbox_memory import HOGS

from moonbus.errors import ConfigError, ScriptMemoryError
from moonbus.host.context import HostSettings
from moonbus.lua.arena import ArenaStatistics, make_arena_source
from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import DEFAULT_ARENA_BYTES as ON
from moonbus.lua.sandbox import SandboxFactory
from moonbus.native import load_fast_path
from moonbus.runtime import Runtime

pytestmark = [
    pytest.mark.timeout(120, method="thread"),
    pytest.mark.skipif(not load_fast_path("moonbus.lua._arena").on,
                       reason="the arena extension is not built or is switched off"),
]

SMALL = 4 * 1024 * 1024
CHURN = """
local kept, n = {}, ...
for i = 1, n do
  local t = {i, tostring(i), {x = i}}          -- small blocks of several sizes
  local s = string.rep("ab", i % 1100)          -- strings across the 2 KiB line
  if i % 3 == 0 then kept[#kept + 1] = t end
  if i % 5 == 0 then kept[#kept] = nil end      -- frees, so blocks are reused
  if #s ~= 2 * (i % 1100) then error("bad string " .. i) end
end
local big = {}
for i = 1, 600 do big[i] = i end                -- an array part grown past 2 KiB
for i = 600, 1, -1 do big[i] = nil end          -- and shrunk back
collectgarbage()
local sum = 0
for _, t in ipairs(kept) do sum = sum + t[1] + #t[2] + t[3].x end
return sum, #kept
"""


def _released(factory: SandboxFactory) -> ArenaStatistics:
    """The arena counters once closed engines are collected: the watchdog may
    keep the last engine it watched referenced until its next scan."""
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        stats = factory.statistics().arena
        if stats.states == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def _engine(factory: SandboxFactory, limit: int | None = SMALL) -> LuaEngine:
    return factory.create("arena", memory_limit=limit, generational_gc=True)


def _run(engine: LuaEngine, source: str, *args: object) -> tuple[object, ...]:
    return engine.call(engine.compile(source, "arena.lua", engine.new_env()), *args, limit=30.0)


@pytest.fixture
def both() -> Iterator[tuple[SandboxFactory, SandboxFactory]]:
    with SandboxFactory(arena_bytes=ON) as with_arena, SandboxFactory(arena_bytes=None) as without:
        yield with_arena, without


def test_script_engines_get_an_arena_and_other_states_do_not() -> None:
    with SandboxFactory(arena_bytes=ON) as factory:
        plain = factory.create("runner-like")  # runner workers, tools: lupa's allocator
        assert factory.statistics().arena.states == 0
        script = _engine(factory)
        stats = factory.statistics().arena
        assert stats.active and stats.states == 1 and stats.chunks_used > 0
        assert _run(script, "return 1 + 1") == (2,)
        plain.close()
        script.close()


def test_the_same_work_gives_the_same_results_and_the_same_account(
        both: tuple[SandboxFactory, SandboxFactory]) -> None:
    results, used = [], []
    for factory in both:
        engine = _engine(factory)
        results.append(_run(engine, CHURN, 3000))
        used.append(engine._rt.get_memory_used())
        engine.close()
    del engine
    assert results[0] == results[1]
    assert used[0] == used[1]  # lupa's account, kept by the arena exactly as lupa keeps it
    assert _released(both[0]).chunks_used == 0  # the closed engine gave them back


@pytest.mark.parametrize("source", HOGS.values(), ids=list(HOGS))
def test_unbounded_allocation_fails_where_it_failed_without_the_arena(
        both: tuple[SandboxFactory, SandboxFactory], source: str) -> None:
    counted = "count = 0 " + source.replace("while true do", "while true do count = count + 1")
    reached = []
    for factory in both:
        engine = _engine(factory, 16 * 1024 * 1024)
        env = engine.new_env()
        with pytest.raises(ScriptMemoryError):
            engine.call(engine.compile(counted, "hog.lua", env), limit=30.0)
        reached.append(env["count"])
        # the engine goes on once the hoard is garbage
        again = "hoard = nil collectgarbage() return #string.rep('y', 2^22)"
        assert engine.call(engine.compile(again, "ok.lua", env), limit=10.0) == (2**22,)
        engine.close()
    assert reached[0] == reached[1]


def test_a_closed_engine_gives_its_chunks_back_for_the_next() -> None:
    with SandboxFactory(arena_bytes=ON) as factory:
        engine = _engine(factory)
        _run(engine, CHURN, 500)
        held = factory.statistics().arena.chunks_used
        engine.close()
        del engine
        after = _released(factory)
        assert after.chunks_used == 0 and after.states == 0
        assert after.chunks_spare >= held  # and those it gave back while it ran (reclaim)
        again = _engine(factory)
        reused = factory.statistics().arena
        assert reused.chunks_spare < held and reused.chunks_used > 0  # spare chunks first
        again.close()


def test_past_its_share_an_engine_uses_lupas_allocator_and_counts_it() -> None:
    with SandboxFactory(arena_bytes=16 * 1024) as factory:
        engine = _engine(factory)
        assert _run(engine, CHURN, 2000)[1] > 0
        stats = factory.statistics().arena
        assert stats.chunks_used <= 4  # 16 KiB of 4 KiB chunks, never more
        assert stats.blocks_passed_on > 0
        with pytest.raises(ScriptMemoryError):  # and the memory limit still holds
            _run(engine, HOGS["table growth"])
        engine.close()


def test_engines_outlive_their_factory_and_its_source() -> None:
    factory = SandboxFactory(arena_bytes=ON)
    engine = _engine(factory)
    factory.close()
    del factory
    gc.collect()  # the factory and its ArenaSource object are gone; the chunks are not
    assert _run(engine, CHURN, 1000)[1] > 0
    engine.close()
    del engine
    gc.collect()  # the last state frees the reservation: nothing left to touch it


def test_installing_twice_is_refused_and_a_null_address_is_an_error() -> None:
    lupa = pytest.importorskip("lupa.lua54")
    source = make_arena_source(lupa, 1 << 20)
    assert source is not None
    with SandboxFactory(arena_bytes=None) as factory:
        engine = _engine(factory)
        assert source.install(engine._state) is True
        assert source.install(engine._state) is False  # already its allocator
        assert _run(engine, CHURN, 200)[1] > 0
        engine.close()
    with pytest.raises(ValueError):
        source.install(0)


@pytest.mark.parametrize("value", [0, 4095, True, 1.5, "1", 2**31])
def test_lua_arena_bytes_is_checked(value: object) -> None:
    with pytest.raises(ConfigError, match="lua_arena_bytes"):
        HostSettings(lua_arena_bytes=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lua_arena_bytes"):
        SandboxFactory(arena_bytes=value)  # type: ignore[arg-type]


def test_lua_arena_bytes_none_turns_it_off(tmp_path: Path) -> None:
    assert HostSettings().lua_arena_bytes == ON  # on unless turned off
    with Runtime(threaded=False) as rt:
        rt.load("a.lua", text='events:on("go", function(e) end)').start()
        assert rt.factory.statistics().arena.states == 1
    settings = HostSettings(lua_arena_bytes=None)
    with Runtime(threaded=False, settings=settings) as rt:
        host = rt.load("a.lua", text='events:on("go", function(e) shared:int("n"):increment() end)')
        host.start()
        rt.bus.emit("go", {})
        assert host.shared.int("n").get() == 1
        assert not rt.factory.statistics().arena.active
    with Runtime(threaded=False, native=False) as rt:  # the pure-Python reference: no arena
        assert not rt.factory.statistics().arena.active


def test_threads_allocating_in_their_own_engines_at_once() -> None:
    with SandboxFactory(arena_bytes=64 * 1024) as factory:  # chunks taken and passed on
        engines = [_engine(factory) for _ in range(4)]
        expected = _run(engines[0], CHURN, 1500)
        results: list[tuple[object, ...]] = []
        errors: list[BaseException] = []

        def work(engine: LuaEngine) -> None:
            try:
                for _ in range(3):
                    results.append(_run(engine, CHURN, 1500))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert results == [expected] * 12
        for engine in engines:
            engine.close()
        del engines, engine, threads
        assert _released(factory).chunks_used == 0


TAKE_AND_GIVE = """
local rounds = ...
for r = 1, rounds do
  local t = {}
  for i = 1, 300 do t[i] = string.rep("x", 1990 + i % 8) end  -- 2 KiB blocks,
                                         -- within the engine's 1 MiB: a chunk
                                         -- taken every other block
  t = nil
  collectgarbage()                       -- and given back (reclaim)
end
return rounds
"""


def test_a_fork_while_another_thread_takes_and_gives_chunks_leaves_the_child_a_working_source(
) -> None:
    # The source has no lock to be left held in the child (_arena.c, Threads):
    # a thread churning chunks while the process forks, and each child making
    # an engine of its own from the same source and running the churn, must
    # finish (with a mutex, a child forked while the churner held it hung).
    import os

    with SandboxFactory(arena_bytes=ON) as factory:
        stop = threading.Event()
        errors: list[BaseException] = []

        def churn() -> None:
            try:
                engine = _engine(factory, limit=None)
                fn = engine.compile(TAKE_AND_GIVE, "churn.lua", engine.new_env())
                while not stop.is_set():
                    engine.call(fn, 50, limit=30.0)
                engine.close()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=churn) for _ in range(2)]  # contending
        for thread in threads:
            thread.start()
        hung = 0
        try:
            for _ in range(200):
                if hung:
                    break
                pid = os.fork()
                if pid == 0:  # the child: no watchdog thread here, so no time limit
                    code = 1
                    try:
                        engine = _engine(factory, limit=None)
                        child = engine.compile(TAKE_AND_GIVE, "child.lua", engine.new_env())
                        code = 0 if engine.call(child, 3, limit=None) == (3,) else 2
                    finally:
                        os._exit(code)
                deadline = time.monotonic() + 10.0
                while True:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        assert os.waitstatus_to_exitcode(status) == 0
                        break
                    if time.monotonic() > deadline:
                        os.kill(pid, 9)
                        os.waitpid(pid, 0)
                        hung += 1
                        break
                    time.sleep(0.001)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not errors
        assert hung == 0
