"""Hostile review of moonbus.lua._arena (the per-state arena allocator).

What must hold: a script engine with an arena (``create(generational_gc=True)``)
runs out of memory at exactly the point it would with lupa's allocator alone,
with the same account; the allocator never hands out overlapping blocks and
keeps every block's bytes across a realloc; closed states give their chunks
back, also after the factory is gone; bad settings are refused.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from moonbus.errors import ConfigError, ScriptMemoryError
from moonbus.lua.sandbox import DEFAULT_ARENA_BYTES as ON
from moonbus.lua.sandbox import SandboxFactory

pytestmark = pytest.mark.timeout(60, method="thread")

_arena = pytest.importorskip("moonbus.lua._arena")

LIMIT = 1 << 20

HOGS = {
    "small tables": "n = 0 local t = {} while true do t[#t + 1] = {} n = n + 1 end",
    "long strings": (
        "n = 0 local t = {} while true do t[#t + 1] = string.rep('x', 3000) .. n n = n + 1 end"
    ),
    "array growth past 2 KiB": "n = 0 local t = {} while true do t[#t + 1] = n n = n + 1 end",
    "grow then shrink": (
        "n = 0 local ts = {} while true do local t = {} for i = 1, 200 do t[i] = i end "
        "for i = 1, 190 do table.remove(t) end ts[#ts + 1] = t n = n + 1 end"
    ),
    "concatenation": (
        "n = 0 local s = '' local keep = {} while true do s = s .. 'ab' n = n + 1 "
        "if #s > 900 then keep[#keep + 1] = s s = '' end end"
    ),
    "coroutines": (
        "n = 0 local cs = {} while true do cs[#cs + 1] = coroutine.create(function() end) "
        "n = n + 1 end"
    ),
    "hash parts": (
        "n = 0 local t = {} while true do local u = {} for i = 1, n % 70 do u['k' .. i] = i end "
        "t[#t + 1] = u n = n + 1 end"
    ),
    "sizes around the small-block limit (2 KiB)": (
        "n = 0 local t = {} while true do t[#t + 1] = string.rep('y', (n * 37) % 2200 + 1) "
        "n = n + 1 end"
    ),
}


@pytest.fixture(scope="module")
def factories() -> Iterator[tuple[SandboxFactory, SandboxFactory]]:
    with SandboxFactory(arena_bytes=ON) as on, SandboxFactory(arena_bytes=None) as off:
        assert on.statistics().arena.active and not off.statistics().arena.active
        yield on, off


def _hog(factory: SandboxFactory, source: str) -> tuple[Any, ...]:
    engine = factory.create("hog", memory_limit=LIMIT, generational_gc=True)
    try:
        env = engine.new_env()
        base = engine.memory_used()
        with pytest.raises(ScriptMemoryError):
            engine.call(engine.compile(source, "hog.lua", env), limit=10.0)
        reached = engine.call(engine.compile("return n", "n.lua", env), limit=5.0)
        return base, reached, engine.memory_used()
    finally:
        engine.close()


@pytest.mark.parametrize("source", HOGS.values(), ids=list(HOGS))
def test_out_of_memory_at_the_same_point_as_lupas_allocator(
    factories: tuple[SandboxFactory, SandboxFactory], source: str
) -> None:
    on, off = factories
    assert _hog(on, source) == _hog(off, source)


# ---------------------------------------------------------------- the allocator itself
_ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                          ctypes.c_size_t)


def _allocf(lua_module: Any, state: int) -> tuple[Any, ctypes.c_void_p]:
    lib = ctypes.CDLL(lua_module.__file__)
    lib.lua_getallocf.restype = _ALLOC
    lib.lua_getallocf.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    ud = ctypes.c_void_p()
    return lib.lua_getallocf(state, ctypes.byref(ud)), ud


@pytest.mark.parametrize("state_bytes", [4096, 16384, 1 << 20])
@pytest.mark.parametrize("room", [0, 60_000])
def test_random_alloc_realloc_free_keep_blocks_apart_and_lupas_rule(
    state_bytes: int, room: int
) -> None:
    """The state's lua_Alloc driven directly (the state idle): blocks never
    overlap, a realloc keeps the bytes, lupa's account matches the live bytes
    and a growth is refused exactly when lupa's rule (limit <= used + growth)
    says so."""
    with SandboxFactory(arena_bytes=state_bytes) as factory:
        engine = factory.create("fuzz", generational_gc=True)
        rt = engine._rt
        alloc, ud = _allocf(factory.lua_module, engine._state)
        used0 = rt.get_memory_used(total=True)
        if room:
            rt.set_max_memory(used0 + room, total=True)
        limit = rt.get_max_memory(total=True)
        rnd = random.Random(state_bytes + room)
        live: dict[int, tuple[int, int]] = {}

        def size() -> int:
            r = rnd.random()
            return rnd.randint(1, 128) if r < 0.6 else rnd.randint(1, 2048) if r < 0.9 else \
                rnd.randint(1900, 5000)

        def check(p: int, n: int, b: int) -> None:
            assert ctypes.string_at(p, n) == bytes([b]) * n

        def refused(osize: int, nsize: int) -> bool:
            used = rt.get_memory_used(total=True)
            return bool(limit) and nsize > osize and limit <= used + nsize - osize

        for i in range(6000):
            op = rnd.random()
            if op < 0.45 or not live:
                n = size()
                expect = refused(0, n)
                p = alloc(ud, None, rnd.randint(0, 8), n)
                assert (p is None) == expect
                if p is None:
                    continue
                b = rnd.randint(1, 255)
                ctypes.memset(p, b, n)
                live[p] = (n, b)
            elif op < 0.75:
                p = rnd.choice(list(live))
                n, b = live.pop(p)
                n2 = size()
                expect = refused(n, n2)
                q = alloc(ud, p, n, n2)
                assert (q is None) == expect
                if q is None:
                    live[p] = (n, b)
                    continue
                check(q, min(n, n2), b)
                b = rnd.randint(1, 255)
                ctypes.memset(q, b, n2)
                live[q] = (n2, b)
            else:
                p = rnd.choice(list(live))
                n, b = live.pop(p)
                check(p, n, b)
                alloc(ud, p, n, 0)
            if i % 500 == 0:
                spans = sorted((p, p + n) for p, (n, _) in live.items())
                assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
                for p, (n, b) in live.items():
                    check(p, n, b)
                assert rt.get_memory_used(total=True) - used0 == sum(n for n, _ in live.values())
        for p, (n, b) in live.items():
            check(p, n, b)
            alloc(ud, p, n, 0)
        assert rt.get_memory_used(total=True) == used0
        engine.close()


# ---------------------------------------------------------------- lifetime
def _collect() -> None:
    # A closed engine's LuaRuntime (and so its lua_close, which gives the
    # chunks back) goes on the second collection, not the first.
    for _ in range(3):
        gc.collect()


def _busy(engine: Any) -> tuple[Any, ...]:
    return engine.call(engine.compile(
        "local t = {} for i = 1, 3000 do t[i] = {i, tostring(i)} end return #t", "b.lua",
        engine.new_env()), limit=5.0)


def test_closed_states_give_their_chunks_back() -> None:
    factory = SandboxFactory(arena_bytes=ON)
    try:
        for _ in range(3):
            engine = factory.create("x", generational_gc=True)
            assert _busy(engine) == (3000,)
            engine.close()
            del engine
            _collect()
        stats = factory.statistics().arena
        assert (stats.states, stats.chunks_used) == (0, 0)
        assert 0 < stats.chunks_spare < 3 * 200  # reused, not taken anew each time
    finally:
        factory.close()


def test_states_outlive_their_factory() -> None:
    factory = SandboxFactory(arena_bytes=ON)
    engines = [factory.create(f"x{i}", generational_gc=True) for i in range(3)]
    factory.close()
    del factory
    gc.collect()
    for engine in engines:
        assert _busy(engine) == (3000,)
        engine.close()
    del engine, engines
    _collect()  # the last state's close unmaps the reservation: no crash


def test_only_script_engines_get_an_arena() -> None:
    with SandboxFactory(arena_bytes=ON) as factory:
        plain = factory.create("runner-like")
        assert _busy(plain) == (3000,)
        assert factory.statistics().arena.states == 0
        plain.close()


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("bad", [0, 4095, True, "1", 1.5, (1 << 30) + 1])
def test_bad_arena_bytes_are_config_errors_naming_the_setting(bad: object) -> None:
    from moonbus.host.context import HostSettings

    with pytest.raises(ConfigError, match="lua_arena_bytes"):
        HostSettings(lua_arena_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lua_arena_bytes"):
        SandboxFactory(arena_bytes=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, "1", 1.5])
def test_bad_arena_bytes_are_refused_with_native_off_too(bad: object) -> None:
    # The value was only checked on the native path: SandboxFactory(native=False)
    # took any value silently.
    with pytest.raises(ConfigError, match="lua_arena_bytes"):
        SandboxFactory(native=False, arena_bytes=bad)  # type: ignore[arg-type]


def test_none_turns_the_arena_off() -> None:
    from moonbus.host.context import HostSettings

    assert HostSettings(lua_arena_bytes=None).lua_arena_bytes is None
    with SandboxFactory(arena_bytes=None) as factory:
        engine = factory.create("x", generational_gc=True)
        assert _busy(engine) == (3000,)
        assert not factory.statistics().arena.active
        engine.close()


# ---------------------------------------------------------------- hoarding
def test_a_transient_peak_is_not_pinned_by_the_state() -> None:
    # The review's finding: a state kept every chunk it ever took as per-class
    # free lists (300 states that peaked at ~1 MiB once: +307 MiB RSS with the
    # arena, +32 MiB without); _arena.c's reclaim now gives wholly free chunks
    # back while the state runs.
    with SandboxFactory(arena_bytes=ON) as factory:
        engine = factory.create("peak", generational_gc=True)
        env = engine.new_env()
        engine.call(engine.compile(
            "do local t = {} for i = 1, 12000 do t[i] = {i} end end "
            "collectgarbage() collectgarbage()", "peak.lua", env), limit=5.0)
        used = engine.memory_used()
        assert used is not None and used < 128 * 1024
        held = factory.statistics().arena.chunks_used * _arena.CHUNK_SIZE
        engine.close()
        assert held <= 4 * 128 * 1024  # what is live, give or take, not the old peak


def _reservations() -> int:
    """How many mappings of this process are the size of an arena reservation."""
    from moonbus.lua.arena import DEFAULT_ARENA_RESERVE

    count = 0
    with open("/proc/self/maps", encoding="ascii") as maps:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            count += end - start >= DEFAULT_ARENA_RESERVE
    return count


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="Linux only")
def test_closing_the_factory_unmaps_its_chunks_once_its_states_are_closed() -> None:
    # A closed factory still referenced (a closed Runtime its embedder keeps)
    # held its whole reservation: every chunk its states ever took stayed
    # resident as "spare" (150 states of 1 MiB: 165 MiB of RSS) until the
    # factory object itself was collected.
    _collect()
    before = _reservations()
    factory = SandboxFactory(arena_bytes=ON)
    engine = factory.create("x", generational_gc=True)
    assert _busy(engine) == (3000,)
    assert _reservations() == before + 1
    factory.close()
    assert _reservations() == before + 1  # a live state keeps it
    assert _busy(engine) == (3000,)
    engine.close()
    del engine
    _collect()
    assert _reservations() == before
    assert factory.create("after", generational_gc=True).close() is None  # still usable, plain
