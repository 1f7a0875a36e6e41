"""Memory limits: a script that allocates without bound gets ScriptMemoryError;
its engine keeps working and other engines are unaffected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moonbus.errors import ScriptMemoryError
from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import SandboxFactory

pytestmark = pytest.mark.timeout(60, method="thread")

SMALL = 16 * 1024 * 1024

HOGS = {
    "table growth": "local t = {} while true do t[#t + 1] = {} end",
    "string doubling": "local s = 'x' while true do s = s .. s end",
    "huge rep": "local s = string.rep('x', 2^28)",
    "rep with separator": "local s = string.rep('x', 2^24, 'yyyyyyyy')",
    "concat of many parts": (
        "local t = {} for i = 1, 1e7 do t[i] = 'abcdefgh' end local s = table.concat(t)"
    ),
    "closures": (
        "local fs = {} while true do local x = {} fs[#fs + 1] = function() return x end end"
    ),
    "coroutines": "local cs = {} while true do cs[#cs + 1] = coroutine.create(function() end) end",
    "global growth": (
        "hoard = {} while true do hoard[#hoard + 1] = string.rep('z', 1000) .. #hoard end"
    ),
    "load of huge code": "local src = string.rep('local a = 1 ', 2^21) load(src)",
    "string.format growth": "local s = 'x' while true do s = string.format('%s%s', s, s) end",
    "gsub growth": "local s = string.rep('a', 2^20) while true do s = s:gsub('a', 'aa') end",
}


@pytest.fixture
def small(factory: SandboxFactory) -> Iterator[LuaEngine]:
    engine = factory.create("hog", memory_limit=SMALL)
    yield engine
    engine.close()


def run(engine: LuaEngine, source: str, env: object = None) -> tuple[object, ...]:
    env = engine.new_env() if env is None else env
    return engine.call(engine.compile(source, "hog.lua", env), limit=10.0)


@pytest.mark.parametrize("source", HOGS.values(), ids=list(HOGS))
def test_unbounded_allocation_is_a_memory_error(small: LuaEngine, source: str) -> None:
    env = small.new_env()
    with pytest.raises(ScriptMemoryError) as caught:
        run(small, source, env)
    assert str(caught.value) == "hog: out of memory"
    assert isinstance(caught.value, MemoryError)
    # The same engine goes on: its garbage is collectable, and a call that
    # needs a few MiB works.
    assert run(small, "hoard = nil collectgarbage() return #string.rep('y', 2^22)", env) == (2**22,)
    used = small.memory_used()
    assert used is not None and used < SMALL


def test_memory_error_inside_pcall_can_be_handled_by_the_script(small: LuaEngine) -> None:
    ok, message = run(
        small,
        """
        local ok, err = pcall(function() local t = {} while true do t[#t + 1] = {} end end)
        return ok, err
    """,
    )
    assert (ok, message) == (False, "not enough memory")


def test_memory_error_in_a_coroutine(small: LuaEngine) -> None:
    result = run(
        small,
        """
        local co = coroutine.create(function() local s = 'x' while true do s = s .. s end end)
        return coroutine.resume(co)
    """,
    )
    assert result == (False, "not enough memory")
    assert run(small, "return 1 + 1") == (2,)


def test_other_engines_are_unaffected(factory: SandboxFactory, small: LuaEngine) -> None:
    other = factory.create("bystander", memory_limit=SMALL)
    other_env = other.new_env()
    try:
        run(other, "keep = {} for i = 1, 1000 do keep[i] = i end", other_env)
        # The hog fills its budget and keeps it filled.
        with pytest.raises(ScriptMemoryError):
            run(
                small,
                "hoard = {} while true do hoard[#hoard + 1] = string.rep('z', 100) .. #hoard end",
            )
        # Another engine still allocates up to its own budget, keeps its data...
        assert run(other, "return #keep, #string.rep('w', 4 * 2^20)", other_env) == (
            1000,
            4 * 2**20,
        )
        # ...and so does a fresh one.
        fresh = factory.create("fresh", memory_limit=SMALL)
        try:
            assert run(fresh, "return #string.rep('v', 4 * 2^20)") == (4 * 2**20,)
        finally:
            fresh.close()
    finally:
        other.close()


def test_default_limit_applies(engine: LuaEngine) -> None:
    with pytest.raises(ScriptMemoryError):
        run(engine, "local t = {} while true do t[#t + 1] = string.rep('q', 1000) .. #t end")
    assert run(engine, "return 'alive'") == ("alive",)


def test_memory_error_while_compiling(small: LuaEngine) -> None:
    # load() reports "not enough memory" as a value, like a syntax error: it
    # must still reach the host as ScriptMemoryError, not ScriptSyntaxError.
    source = "return {" + "1," * (2 * 1024 * 1024 - 8) + "}"  # under the 4 MiB size cap
    with pytest.raises(ScriptMemoryError, match="out of memory while compiling"):
        small.compile(source, "big.lua", small.new_env())
    assert run(small, "return 3") == (3,)


def test_memory_error_while_making_an_environment(small: LuaEngine) -> None:
    # A script that keeps its hoard in a global fills the budget for good:
    # even a new environment cannot be made, and says so as ScriptMemoryError.
    # Dropping the hoard (compiled beforehand: compiling needs memory too)
    # gives the engine back.
    env = small.new_env()
    release = small.compile("hoard = nil collectgarbage()", "release.lua", env)
    with pytest.raises(ScriptMemoryError):
        run(small, "hoard = {} while true do hoard[#hoard + 1] = {} end", env)
    with pytest.raises(ScriptMemoryError):
        small.new_env()
    small.call(release, limit=5.0)
    assert run(small, "return 4") == (4,)


def test_raising_the_limit_lets_the_script_finish(small: LuaEngine) -> None:
    source = "local s = string.rep('x', 24 * 2^20) return #s"
    with pytest.raises(ScriptMemoryError):
        run(small, source)
    small.set_memory_limit(64 * 1024 * 1024)
    assert run(small, source) == (24 * 2**20,)


def test_memory_budget_is_on_top_of_current_usage(small: LuaEngine) -> None:
    env = small.new_env()
    run(small, "keep = string.rep('k', 4 * 2^20)", env)  # 4 MiB the state holds on to
    small.set_memory_budget(2 * 1024 * 1024)
    # 768 KiB more fits although the state already uses 4 MiB; 3 MiB more does not.
    # (Not 1 MiB: string.rep holds its 1 MiB buffer and the 1 MiB result at once,
    # so that only fit in a 2 MiB budget thanks to garbage the state happened to
    # hold when the budget was set.)
    assert run(small, "return #string.rep('x', 3 * 2^18)", env) == (3 * 2**18,)
    with pytest.raises(ScriptMemoryError):
        run(small, "local s = string.rep('x', 3 * 2^20)", env)
    small.set_memory_budget(8 * 1024 * 1024)  # a new budget replaces the old one
    assert run(small, "return #string.rep('x', 3 * 2^20)", env) == (3 * 2**20,)


CALL_WITH_A_BIG_STRING = """
from moonbus.errors import ScriptMemoryError
from moonbus.lua.sandbox import SandboxFactory
with SandboxFactory() as factory:
    engine = factory.create("t", memory_limit=1 << 20)
    length = engine.compile("local s = ... return #s", "t.lua", engine.new_env())
    for arg in ("x" * 1_000_000, b"y" * 2_000_000, "\\u00e9" * 600_000):
        try:
            engine.call(length, arg, limit=5.0)
        except ScriptMemoryError as exc:
            assert "call arguments" in str(exc), exc
        else:
            raise AssertionError("a string over the limit went in")
    assert engine.call(length, "z" * 1000, limit=5.0) == (1000,)  # and the engine works
print("refused")
"""


def test_a_call_argument_over_the_limit_is_refused_not_a_panic() -> None:
    # lupa pushes call arguments with unprotected Lua calls: a string over the
    # state's free memory made Lua panic and abort the whole process (hence a
    # child process). The engine measures string arguments first.
    from tests.child_process import run_child

    done = run_child(CALL_WITH_A_BIG_STRING, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "refused"
