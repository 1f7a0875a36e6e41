"""Hostile review of _arena.c's reclaim (wholly free chunks given back while
a state runs): the allocator driven directly through ctypes with phases that
build up, fragment and drain many blocks so reclaim passes run often; blocks
never overlap, keep their bytes, and chunks_used drops once they are free."""

from __future__ import annotations

import ctypes
import itertools
import random
from typing import Any

import pytest
from tests.lua.test_arena_attack import _allocf

from moonbus.lua.sandbox import DEFAULT_ARENA_BYTES as ON
from moonbus.lua.sandbox import SandboxFactory

pytestmark = pytest.mark.timeout(60, method="thread")

_arena = pytest.importorskip("moonbus.lua._arena")



def _used(factory: SandboxFactory) -> int:
    return factory.statistics().arena.chunks_used


@pytest.mark.parametrize("seed", range(4))
def test_reclaim_under_churn_keeps_blocks_apart_and_gives_chunks_back(seed: int) -> None:
    with SandboxFactory(arena_bytes=8 << 20) as factory:
        engine = factory.create("fuzz", generational_gc=True)
        alloc, ud = _allocf(factory.lua_module, engine._state)
        rnd = random.Random(seed)
        live: dict[int, tuple[int, int]] = {}
        base_chunks = _used(factory)

        def size() -> int:
            r = rnd.random()
            return rnd.randint(1, 64) if r < 0.5 else rnd.randint(1, 2048) if r < 0.95 else \
                rnd.randint(2049, 4000)

        def check(p: int, n: int, b: int) -> None:
            assert ctypes.string_at(p, n) == bytes([b]) * n

        def new() -> None:
            n = size()
            p = alloc(ud, None, 0, n)
            assert p is not None
            b = rnd.randint(1, 255)
            ctypes.memset(p, b, n)
            live[p] = (n, b)

        def drop(p: int) -> None:
            n, b = live.pop(p)
            check(p, n, b)
            alloc(ud, p, n, 0)

        def grow_or_shrink(p: int) -> None:
            n, b = live.pop(p)
            n2 = size()
            q = alloc(ud, p, n, n2)
            assert q is not None
            check(q, min(n, n2), b)
            b = rnd.randint(1, 255)
            ctypes.memset(q, b, n2)
            live[q] = (n2, b)

        def audit() -> None:
            spans = sorted((p, p + n) for p, (n, _) in live.items())
            assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
            for p, (n, b) in live.items():
                check(p, n, b)

        for _round in range(6):
            for _ in range(rnd.randint(2000, 6000)):
                new()
            for _ in range(1000):
                grow_or_shrink(rnd.choice(list(live)))
            keys = list(live)
            rnd.shuffle(keys)
            keep = rnd.random() * 0.3
            for p in keys[int(len(keys) * keep):]:
                drop(p)
            audit()
        peak = _used(factory)
        for p in list(live):
            drop(p)
        # nothing live: most of the peak's chunks went back while draining
        assert _used(factory) - base_chunks < (peak - base_chunks) / 4, (base_chunks, peak)
        engine.close()


# ---------------------------------------------------------------- through Lua
def _run(factory: SandboxFactory, source: str, *args: int) -> tuple[Any, ...]:
    engine = factory.create("r", generational_gc=True)
    try:
        env = engine.new_env()
        fn = engine.compile(source, "r.lua", env)
        return engine.call(fn, *args, limit=30.0), factory.statistics().arena.chunks_used
    finally:
        engine.close()


PINNED_PEAK = """
local keep, t = {}, {}
for i = 1, 12000 do t[i] = {i} if i % 50 == 0 then keep[#keep + 1] = {} end end
t = nil collectgarbage() collectgarbage()   -- every chunk still holds a pin: nothing to give
keep = nil collectgarbage() collectgarbage() -- now the peak's chunks are wholly free
return collectgarbage('count')
"""


def test_a_peak_freed_before_its_pins_is_given_back() -> None:
    # Before: a pass that found nothing set the next at free_bytes + 64 KiB,
    # and dropping the pins (a few KiB) never got there: the whole peak
    # (~200 chunks, nothing live in them) stayed with the state.
    with SandboxFactory(arena_bytes=ON) as factory:
        (kib,), held = _run(factory, PINNED_PEAK)
        assert kib < 128
        assert held * _arena.CHUNK_SIZE <= 4 * 128 * 1024, held


CHURN = """
local n, cycles = ...
local holes, t = {}, {}
for i = 1, n do local s = 'k' .. i t[i] = s if i % 60 == 0 then holes[#holes + 1] = s end end
t = nil collectgarbage() collectgarbage()   -- n short strings' holes, no chunk wholly free
local t0 = os.clock()
for c = 1, cycles do                        -- 70 KiB of fresh chunks, freed
  local u = {}
  for j = 1, 70 do u[j] = string.rep('x', 1000) .. j end
  u = nil
  collectgarbage('step', 0)
end
return os.clock() - t0
"""


def test_churn_beside_a_fragmented_free_list_costs_what_it_costs_without_the_arena() -> None:
    # Before: every 64 KiB freed started a pass walking every free block, so
    # 8 MiB of holes made each 70 KiB cycle walk ~250,000 blocks (twice):
    # ~30 times slower than lupa's allocator (130 times with 16 MiB).
    args = (250_000, 300)
    with SandboxFactory(arena_bytes=64 << 20) as on, SandboxFactory(arena_bytes=None) as off:
        (t_on,), _ = _run(on, CHURN, *args)
        (t_off,), _ = _run(off, CHURN, *args)
    assert t_on < 3 * t_off + 0.05, (t_on, t_off)
