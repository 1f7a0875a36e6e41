"""The action queue drained at the frame barrier, and the asyncio variant."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from runner_helpers import SPIN, wait_for, wait_in_lua

from moonbus.errors import ConfigError, RunnerBusyError, ScriptError
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import Runner
from moonbus.runner.action_queue import ActionQueue


def test_apply_runs_on_the_draining_thread(runner: Runner) -> None:
    applied: list[tuple[int, Any]] = []

    def apply(result: Any) -> None:
        applied.append((threading.get_ident(), result))

    fut = runner.submit("return 'move', 3, 4", apply=apply)
    assert fut.result(timeout=5) == ("move", 3, 4)
    assert applied == []  # queued before the future settled, not run yet
    assert runner.pending_actions == 1
    assert runner.drain() == 1
    assert applied == [(threading.get_ident(), ("move", 3, 4))]
    assert runner.drain() == 0


def test_actions_run_in_completion_order_with_a_budget(runner1: Runner) -> None:
    applied: list[int] = []
    futures = [runner1.submit("return ...", args=(i,), apply=applied.append) for i in range(5)]
    futures[-1].result(timeout=5)
    assert runner1.drain(max_actions=2) == 2
    assert applied == [0, 1]
    assert runner1.drain() == 3
    assert applied == [0, 1, 2, 3, 4]


def test_failed_and_cancelled_jobs_queue_no_action(runner1: Runner) -> None:
    applied: list[Any] = []
    runner1.submit("error('x')", apply=applied.append).exception(timeout=5)
    runner1.submit("return +", apply=applied.append)
    running = runner1.submit(SPIN, timeout=30, apply=applied.append)
    wait_in_lua(running)
    running.cancel()
    assert runner1.drain() == 0
    assert applied == []


def test_a_failing_action_propagates_and_the_rest_stay_queued(runner1: Runner) -> None:
    applied: list[Any] = []

    def explode(result: Any) -> None:
        raise ValueError(f"bad {result}")

    runner1.submit("return 1", apply=explode)
    runner1.submit("return 2", apply=applied.append).result(timeout=5)
    with pytest.raises(ValueError, match="bad 1"):
        runner1.drain()
    assert runner1.drain() == 1
    assert applied == [2]


def test_drain_still_works_after_close(factory: SandboxFactory) -> None:
    applied: list[Any] = []
    made = Runner(workers=1, factory=factory)
    made.submit("return 'late'", apply=applied.append)
    made.close()
    assert made.drain() == 1
    assert applied == ["late"]


def test_action_queue_unit() -> None:
    queue = ActionQueue()
    seen: list[Any] = []
    queue.put(seen.append, 1)
    queue.put(lambda r: queue.put(seen.append, r + 1), 10)  # queued while draining
    assert len(queue) == 2
    assert queue.drain() == 2
    assert seen == [1]
    assert queue.drain(max_actions=0) == 0
    assert queue.drain() == 1
    assert seen == [1, 11]
    with pytest.raises(ConfigError):
        queue.drain(max_actions=-1)


# ------------------------------------------------------------------- asyncio
def test_run_awaits_the_result(runner: Runner) -> None:
    async def main() -> list[Any]:
        return list(await asyncio.gather(*(runner.run("return 1 + ...", (i,)) for i in range(10))))

    assert asyncio.run(main()) == [i + 1 for i in range(10)]


def test_run_raises_script_errors(runner: Runner) -> None:
    async def main() -> None:
        await runner.run("error('boom')")

    with pytest.raises(ScriptError, match="boom"):
        asyncio.run(main())


def test_cancelling_the_task_cancels_the_running_job(runner1: Runner) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(runner1.run(SPIN, timeout=30))
        while runner1.statistics().busy_workers == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_for(lambda: runner1.statistics().cancelled == 1)
    assert runner1.submit("return 'free'").result(timeout=5) == "free"


def test_run_waits_for_a_slot_off_the_event_loop(factory: SandboxFactory) -> None:
    with Runner(workers=1, factory=factory, queue_size=1, acquire_timeout=10) as made:
        blocker = made.submit(SPIN, timeout=30)
        wait_in_lua(blocker)
        made.submit("return 'queued'")

        async def main() -> Any:
            pending = asyncio.ensure_future(made.run("return 'through'"))
            ticks = 0
            while ticks < 20:  # the loop keeps running while run() waits
                await asyncio.sleep(0.001)
                ticks += 1
            assert not pending.done()
            blocker.cancel()
            return await pending

        assert asyncio.run(main()) == "through"


def test_run_with_no_acquire_wait_raises_busy(factory: SandboxFactory) -> None:
    with Runner(workers=1, factory=factory, queue_size=1, acquire_timeout=0) as made:
        blocker = made.submit(SPIN, timeout=30)
        wait_in_lua(blocker)
        made.submit("return 1")

        async def main() -> None:
            await made.run("return 2")

        with pytest.raises(RunnerBusyError):
            asyncio.run(main())
        blocker.cancel()
