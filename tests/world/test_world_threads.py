"""Thread safety: the API from several threads while the game loop steps, and emit
handlers that call back into the API (same thread and another thread)."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
from world_support import Recorded, Recorder

from moonbus.world import World

STEPS = 400


def hammer(world: World, stop: threading.Event, errors: list[BaseException], n: int) -> None:
    apis = world.apis()
    me = apis["players"].local_player()
    try:
        i = 0
        while not stop.is_set():
            i += 1
            me.x(), me.is_moving(), me.is_animating(), me.health()
            apis["inventory"].items()
            apis["inventory"].count("Copper ore")
            apis["skills"].level("mining")
            world.snapshot()
            if i % 5 == n % 5:
                target = apis["game_objects"].find_nearest({"ore": ["copper", "tin"]})
                if target is not None:
                    target.interact("Mine")
            if i % 7 == 0:
                goblin = apis["npcs"].find_nearest("Goblin")
                if goblin is not None:
                    goblin.interact()
            if i % 11 == 0:
                apis["chat"].send(f"thread {n} says {i}")
            if i % 13 == 0 and apis["bank"].open():
                apis["bank"].deposit_all()
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.timeout(60)
def test_api_from_many_threads_while_stepping(world: World, recorder: Recorder) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=hammer, args=(world, stop, errors, n), daemon=True)
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for _ in range(STEPS):
        world.step()
    stop.set()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert errors == []
    ticks = [e.data["tick"] for e in recorder.events if e.type == "tick"]
    assert ticks == list(range(1, STEPS + 1))
    # One emitter at a time, in the order the world produced the events.
    emitted_ticks = [e.tick for e in recorder.events]
    assert emitted_ticks == sorted(emitted_ticks)
    assert recorder.of("game_action") and recorder.of("message_received")
    # Every inventory change was applied exactly once: replaying them gives the final counts.
    replay: dict[str, int] = {}
    for d in recorder.of("inventory_changed"):
        replay[d["item"].name()] = replay.get(d["item"].name(), 0) + d["change"]
        assert d["item"].count() == replay[d["item"].name()]
    snap = world.snapshot()
    assert {k: v for k, v in replay.items() if v} == snap["inventory"]
    assert snap["empty_slots"] + len(world.apis()["inventory"].items()) == 28


@pytest.mark.timeout(30)
def test_handler_on_the_emitting_thread_may_call_the_api() -> None:
    seen: list[Recorded] = []
    holder: dict[str, Any] = {}

    def emit(type: str, data: Any, *, tick: int, source: str = "host") -> object:
        seen.append(Recorded(type, dict(data), tick, source))
        if type == "tick":  # a synchronous handler, as a Lua event handler would be
            apis = holder["apis"]
            rock = apis["game_objects"].find_nearest({"ore": "copper"})
            if rock is not None and not apis["players"].local_player().is_animating():
                rock.interact("Mine")
        return None

    world = World(seed=4, emit=emit)
    holder["apis"] = world.apis()
    for _ in range(60):
        world.step()
    actions = [e for e in seen if e.type == "game_action"]
    assert actions
    for n in range(1, 61):
        in_tick = [e.type for e in seen if e.tick == n]
        assert in_tick[0] == "tick"
    assert [e.tick for e in seen] == sorted(e.tick for e in seen)


@pytest.mark.timeout(30)
def test_handler_on_another_thread_that_the_emitter_waits_for() -> None:
    """The event-thread shape: emit hands each event to a worker and waits for it."""
    jobs: queue.Queue[tuple[str, threading.Event] | None] = queue.Queue()
    holder: dict[str, Any] = {}
    seen: list[str] = []

    def worker() -> None:
        while (job := jobs.get()) is not None:
            type, done = job
            if type == "tick":
                apis = holder["apis"]
                goblin = apis["npcs"].find_nearest("Goblin")
                me = apis["players"].local_player()
                if goblin is not None and not me.is_in_combat() and not me.is_moving():
                    goblin.interact("Attack")
                apis["chat"].send("from the event thread")
            done.set()

    def emit(type: str, data: Any, *, tick: int, source: str = "host") -> object:
        seen.append(type)
        done = threading.Event()
        jobs.put((type, done))
        assert done.wait(timeout=5), "the handler thread deadlocked against the world"
        return None

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    world = World(seed=9, emit=emit)
    holder["apis"] = world.apis()
    try:
        for _ in range(120):
            world.step()
    finally:
        jobs.put(None)
        thread.join(timeout=5)
    assert "combat_started" in seen
    assert seen.count("message_received") >= 100
