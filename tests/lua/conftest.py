"""Fixtures for the sandbox attack tests (tests/lua/test_sandbox_*.py).

``engine`` is a fresh sandboxed engine per test, from a factory shared by the
module; ``lua(source, *args, limit=...)`` compiles ``source`` as
``attack.lua`` in a fresh environment of that engine and calls it;
``assert_healthy(engine)`` checks that an engine which just aborted a call
runs the next ones normally. ``state`` (tests/lua/engine_lock_support.py) is
a call state with C locks and its threading twin, for the engine-lock tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.lua.engine_lock_support import state  # noqa: F401  (a fixture)

from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import SandboxFactory

PURE_LOOP = "local n = 0 for i = 1, ... do n = n + i % 7 end return n"
PURE_LOOP_N = 2_000_000
PURE_LOOP_RESULT = sum(i % 7 for i in range(1, PURE_LOOP_N + 1))

Run = Callable[..., tuple[Any, ...]]


@pytest.fixture(scope="module")
def factory() -> Iterator[SandboxFactory]:
    with SandboxFactory() as made:
        yield made


@pytest.fixture
def engine(factory: SandboxFactory) -> Iterator[LuaEngine]:
    made = factory.create("attacker")
    yield made
    made.close()


def run_in(
    engine: LuaEngine, source: str, *args: Any, limit: float | None = 2.0, env: Any = None
) -> tuple[Any, ...]:
    """Compile ``source`` as attack.lua (fresh env unless given) and call it."""
    env = engine.new_env() if env is None else env
    return engine.call(engine.compile(source, "attack.lua", env), *args, limit=limit)


@pytest.fixture
def lua(engine: LuaEngine) -> Run:
    def run(source: str, *args: Any, limit: float | None = 2.0, env: Any = None) -> tuple[Any, ...]:
        return run_in(engine, source, *args, limit=limit, env=env)

    return run


def _loop_cpu(engine: LuaEngine) -> float:
    """Best CPU time of three runs of the pure loop (checks the result too)."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        result = run_in(engine, PURE_LOOP, PURE_LOOP_N, limit=30.0)
        best = min(best, time.process_time() - start)
        assert result == (PURE_LOOP_RESULT,)
    return best


@pytest.fixture
def assert_healthy(factory: SandboxFactory) -> Callable[[LuaEngine], None]:
    """After an abort: plain calls, coroutines and a pure loop at full speed.

    "Full speed" is loose on purpose (within 3x a fresh engine's time plus
    50 ms): a hook left armed makes the loop fail outright, a leftover
    per-instruction hook would roughly double it.
    """

    def check(engine: LuaEngine) -> None:
        assert run_in(engine, "return 1 + ...", 41) == (42,)
        assert run_in(
            engine,
            "local co = coroutine.wrap(function(a)"
            " local b = coroutine.yield(a + 1) return b * 2 end)"
            " return co(1), co(21)",
        ) == (2, 42)
        assert run_in(engine, "return pcall(error, 'e', 0)") == (False, "e")
        fresh = factory.create("reference")
        try:
            reference = _loop_cpu(fresh)
        finally:
            fresh.close()
        assert _loop_cpu(engine) <= 3 * reference + 0.05

    return check
