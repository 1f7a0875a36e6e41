"""Polls on the hot path: a poll that returns is started, run and ended in
one Lua call with no task object made for it, in the Lua thread its
predecessor ran in (tasks.lua's ``task_body``); polls that sleep or fail
keep their own semantics around it."""

from __future__ import annotations

from typing import Any

import pytest

import moonbus.host.lifecycle_task as lifecycle_task

REUSE = """
threads, seen = 0, {}
function poll()
  local co = tostring(coroutine.running())
  if not seen[co] then seen[co] = true; threads = threads + 1 end
  shared:int("threads"):set(threads)
  return 100
end
"""

MIXED = """
n = 0
function poll()
  n = n + 1
  if n % 3 == 1 then sleep(30) end
  if n % 3 == 2 then error("boom " .. n) end
  shared:int("n"):set(n)
  return 100
end
"""


def test_returning_polls_share_one_thread_and_make_no_task(stepped: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    class Counted(lifecycle_task.LifecycleTask):
        __slots__ = ()

        def __init__(self, kind: str, *args: Any, **kwargs: Any) -> None:
            made.append(kind)
            super().__init__(kind, *args, **kwargs)

    monkeypatch.setattr(lifecycle_task, "LifecycleTask", Counted)
    h = stepped.script(REUSE)
    h.start()
    stepped.advance(2.0)
    assert h.polls >= 19
    assert h.shared.int("threads").get() == 1
    assert made == []
    assert h.statistics().poll_latency.count == h.polls


def test_sleeping_and_failing_polls_around_reused_ones(stepped: Any) -> None:
    h = stepped.script(MIXED)
    h.start()
    stepped.advance(3.0)
    assert h.status == "running"
    ran = h.shared.int("n").get()
    assert ran >= 9
    # Every third poll fails (its line named), the others (one in two of
    # them after a sleep) return; the counters see each poll once.
    assert h.poll_errors == ran // 3 or h.poll_errors == ran // 3 + 1
    assert any("s.lua:6: boom 2" in m for m in stepped.messages("error"))
    assert h.statistics().poll_latency.count == h.polls + h.poll_errors
    h.stop()
    assert h.status == "stopped"
