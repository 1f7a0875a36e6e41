"""Aborting a call before it starts (``LuaEngine.next_token`` + ``abort``).

The runner hands a job's future the token of the call that is about to start;
a ``cancel()`` in that moment must abort the call as it starts, and stale or
out-of-order aborts must never hit a later call.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from moonbus.errors import ScriptCancelled
from moonbus.lua.engine import LuaEngine

pytestmark = pytest.mark.timeout(60, method="thread")

Run = Callable[..., tuple[Any, ...]]
SPIN = "while true do end"


def test_abort_of_the_next_call_cancels_it_as_it_starts(
    engine: LuaEngine, lua: Run, assert_healthy: Callable[[LuaEngine], None]
) -> None:
    token = engine.next_token()
    assert engine.abort(token, "cancel") is False  # not running yet
    start = time.perf_counter()
    with pytest.raises(ScriptCancelled):
        lua(SPIN, limit=10.0)
    assert time.perf_counter() - start < 1.0
    assert_healthy(engine)


def test_abort_of_an_ended_call_does_not_touch_later_calls(engine: LuaEngine, lua: Run) -> None:
    token = engine.next_token()
    assert lua("return 1") == (1,)
    assert engine.abort(token, "cancel") is False
    assert lua("return 2") == (2,)
    assert engine.abort(token - 1, "cancel") is False
    assert lua("return 3") == (3,)


def test_an_earlier_token_never_replaces_a_recorded_later_one(engine: LuaEngine, lua: Run) -> None:
    token = engine.next_token()
    engine.abort(token, "cancel")
    engine.abort(token - 1, "timeout")  # e.g. a late watchdog abort of the previous call
    with pytest.raises(ScriptCancelled):
        lua(SPIN, limit=10.0)
    assert lua("return 1") == (1,)


def test_abort_racing_with_the_start_always_lands(engine: LuaEngine) -> None:
    # The owner starts the call while another thread aborts its token: every
    # interleaving must end with the call aborted, never spinning to its limit.
    rng = random.Random(4)
    spin = engine.compile(SPIN, "spin.lua", engine.new_env())
    for _ in range(200):
        token = engine.next_token()
        delay = rng.choice((0.0, 0.0, 1e-5, 1e-4))

        def abort(token: int = token, delay: float = delay) -> None:
            if delay:
                time.sleep(delay)
            engine.abort(token, "cancel")

        thread = threading.Thread(target=abort)
        thread.start()
        start = time.perf_counter()
        with pytest.raises(ScriptCancelled):
            engine.call(spin, limit=10.0)
        thread.join(5)
        assert time.perf_counter() - start < 1.0
    assert engine.call(engine.compile("return 5", "ok.lua", engine.new_env()), limit=1.0) == (5,)
