"""Async handlers (scheduled on the subscribing loop) and ``wait_for``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from moonbus.bus import Bus, Event
from moonbus.errors import BusError, ClosedError


def test_async_handler_runs_on_the_loop_it_subscribed_from() -> None:
    async def main() -> None:
        with Bus() as bus:
            loop = asyncio.get_running_loop()
            loop_thread = threading.get_ident()
            ran: list[tuple[int, int, bool]] = []
            done = asyncio.Event()

            async def handler(event: Event) -> None:
                await asyncio.sleep(0)
                ran.append((event.seq, threading.get_ident(),
                            asyncio.get_running_loop() is loop))
                if len(ran) == 3:
                    done.set()

            sync_seen: list[int] = []
            bus.on("a", handler)
            bus.on("a", lambda e: sync_seen.append(e.seq))
            bus.emit("a")
            # emit does not await async handlers: only the sync one has run.
            assert ran == [] and sync_seen == [1]
            # Emits from other threads are scheduled on this loop too.
            other = threading.Thread(target=lambda: (bus.emit("a"), bus.emit("a")))
            other.start()
            await asyncio.to_thread(other.join)
            await asyncio.wait_for(done.wait(), 5)
            assert sorted(r[0] for r in ran) == [1, 2, 3]
            assert all(r[1] == loop_thread and r[2] for r in ran)
            sub = bus.subscriptions()[0]
            assert sub.is_async and sub.loop is loop
            assert bus.statistics().delivered == 6  # 3 async + 3 sync calls

    asyncio.run(main())


def test_async_handler_starts_in_seq_order() -> None:
    async def main() -> None:
        with Bus() as bus:
            started: list[int] = []

            async def handler(event: Event) -> None:
                started.append(event.seq)

            bus.on("*", handler)
            for _ in range(20):
                bus.emit("a")
            for _ in range(5):
                await asyncio.sleep(0)
            assert started == list(range(1, 21))

    asyncio.run(main())


def test_async_handler_needs_a_running_loop_or_an_explicit_one() -> None:
    async def handler(event: Event) -> None:
        pass

    with Bus() as bus:
        with pytest.raises(BusError, match="running event loop"):
            bus.on("a", handler)
        loop = asyncio.new_event_loop()
        try:
            ran: list[int] = []

            async def recording(event: Event) -> None:
                ran.append(event.seq)

            sub = bus.on("a", recording, loop=loop)
            assert sub.is_async and sub.loop is loop
            bus.emit("a")
            assert ran == []
            loop.run_until_complete(asyncio.sleep(0.01))
            assert ran == [1] and sub.errors == 0
        finally:
            loop.close()


def test_sync_handler_ignores_the_loop_argument() -> None:
    loop = asyncio.new_event_loop()
    try:
        with Bus() as bus:
            seen: list[int] = []
            sub = bus.on("a", lambda e: seen.append(e.seq), loop=loop)
            bus.emit("a")
            assert seen == [1] and not sub.is_async and sub.loop is None
    finally:
        loop.close()


def test_async_handler_error_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def main(bus: Bus) -> None:
        async def failing_async_handler(event: Event) -> None:
            raise RuntimeError(f"async boom {event.seq}")

        sub = bus.on("a", failing_async_handler)
        bus.on("a", lambda e: None)
        bus.emit("a")
        for _ in range(5):
            await asyncio.sleep(0)
        assert sub.errors == 1

    with Bus() as bus, caplog.at_level(logging.ERROR, logger="moonbus.bus"):
        asyncio.run(main(bus))
        assert bus.statistics().handler_errors == 1
    assert "async boom 1" in caplog.text
    assert "failing_async_handler" in caplog.text
    assert "Traceback" in caplog.text


def test_async_handler_on_a_closed_loop_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(event: Event) -> None:
        pass

    loop = asyncio.new_event_loop()
    loop.close()
    with Bus() as bus, caplog.at_level(logging.ERROR, logger="moonbus.bus"):
        sub = bus.on("a", handler, loop=loop)
        seen: list[int] = []
        bus.on("a", lambda e: seen.append(e.seq))
        bus.emit("a")
        assert sub.errors == 1 and seen == [1]
    assert "loop is closed" in caplog.text


def test_once_async_handler() -> None:
    async def main() -> None:
        with Bus() as bus:
            got: list[int] = []

            async def handler(event: Event) -> None:
                got.append(event.seq)

            bus.once("a", handler)
            bus.emit("a")
            bus.emit("a")
            await asyncio.sleep(0.01)
            assert got == [1]

    asyncio.run(main())


def test_wait_for_returns_the_next_matching_event() -> None:
    async def main() -> None:
        with Bus() as bus:
            bus.emit("a")  # before the wait: never returned
            task = asyncio.create_task(bus.wait_for("a", timeout=5))
            await asyncio.sleep(0)
            bus.emit("b")
            second = bus.emit("a")
            bus.emit("a")
            assert await task == second

    asyncio.run(main())


def test_wait_for_with_predicate_and_wildcard() -> None:
    async def main() -> None:
        with Bus() as bus:
            task = asyncio.create_task(
                bus.wait_for("player:*", timeout=5, where=lambda e: e.data.get("hp", 1) <= 0))
            await asyncio.sleep(0)
            bus.emit("player:hit", {"hp": 5})
            bus.emit("npc:died", {"hp": 0})
            died = bus.emit("player:hit", {"hp": 0})
            event = await task
            assert event == died

    asyncio.run(main())


def test_wait_for_times_out_and_cleans_up() -> None:
    async def main() -> None:
        with Bus() as bus:
            with pytest.raises(TimeoutError):
                await bus.wait_for("never", timeout=0.05)
            with pytest.raises(TimeoutError):
                await bus.wait_for("a", timeout=0.05, where=lambda e: False)
            bus.emit("a")
            # A later event must not find a stale waiter (nothing to resolve).
            assert await asyncio.wait_for(_resolved_next(bus), 5) == 2

    asyncio.run(main())


async def _resolved_next(bus: Bus) -> int:
    task = asyncio.create_task(bus.wait_for("a"))
    await asyncio.sleep(0)
    bus.emit("a")
    return (await task).seq


def test_wait_for_is_resolved_when_emit_returns_even_from_another_thread() -> None:
    async def main() -> None:
        with Bus() as bus:
            task = asyncio.create_task(bus.wait_for("remote", timeout=5))
            await asyncio.sleep(0)
            sent: list[Event] = []
            thread = threading.Thread(target=lambda: sent.append(bus.emit("remote")))
            thread.start()
            await asyncio.to_thread(thread.join)
            assert await task == sent[0]

    asyncio.run(main())


def test_wait_for_predicate_error_propagates_to_the_waiter() -> None:
    async def main() -> None:
        with Bus() as bus:
            def bad(event: Event) -> bool:
                raise ValueError("bad predicate")

            task = asyncio.create_task(bus.wait_for("a", where=bad, timeout=5))
            await asyncio.sleep(0)
            event = bus.emit("a")
            with pytest.raises(ValueError, match="bad predicate"):
                await task
            assert bus.log() == [event]

    asyncio.run(main())


def test_many_waiters_each_get_their_event() -> None:
    async def main() -> None:
        with Bus() as bus:
            def number_is(i: int) -> Callable[[Event], bool]:
                return lambda event: bool(event.data["i"] == i)

            tasks = [asyncio.create_task(bus.wait_for("n", where=number_is(i)))
                     for i in range(5)]
            await asyncio.sleep(0)
            events = [bus.emit("n", {"i": i}) for i in reversed(range(5))]
            results = await asyncio.gather(*tasks)
            assert results == list(reversed(events))

    asyncio.run(main())


def test_close_fails_pending_waiters_and_new_ones() -> None:
    async def main() -> None:
        bus = Bus()
        task = asyncio.create_task(bus.wait_for("a", timeout=5))
        await asyncio.sleep(0)
        bus.close()
        with pytest.raises(ClosedError):
            await task
        with pytest.raises(ClosedError):
            await bus.wait_for("a", timeout=1)

    asyncio.run(main())


def test_predicate_may_use_the_bus_and_its_emit_is_delivered_after_the_event() -> None:
    async def main() -> None:
        with Bus() as bus:
            seen: list[str] = []
            bus.on("*", lambda e: seen.append(f"{e.type}:{e.seq}"))

            def busy_predicate(event: Event) -> bool:
                bus.statistics()
                bus.log()
                bus.on("late", print).cancel()
                bus.emit("from-predicate")
                return True

            task = asyncio.create_task(bus.wait_for("a", where=busy_predicate, timeout=5))
            await asyncio.sleep(0)
            first = bus.emit("a")
            assert seen == ["a:1", "from-predicate:2"]
            assert await task == first

    asyncio.run(main())


def test_predicate_emit_during_a_nested_emit_keeps_seq_order() -> None:
    async def main() -> None:
        with Bus() as bus:
            seen: list[int] = []
            bus.on("*", lambda e: seen.append(e.seq))
            bus.on("outer", lambda e: bus.emit("inner"))

            def emits(event: Event) -> bool:
                bus.emit("from-predicate")
                return True

            task = asyncio.create_task(bus.wait_for("inner", where=emits, timeout=5))
            await asyncio.sleep(0)
            bus.emit("outer")
            assert seen == [1, 2, 3]
            assert (await task).seq == 2

    asyncio.run(main())
