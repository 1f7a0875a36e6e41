"""Properties over random play: determinism and bookkeeping invariants for any seed and calls."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from world_support import Recorder

from moonbus.world import World

MOVES = ("mine", "chop", "fish", "pick", "attack", "bank", "deposit", "close", "chat", "wait")

programs = st.lists(
    st.tuples(st.sampled_from(MOVES), st.integers(min_value=0, max_value=25)),
    min_size=1,
    max_size=25,
)


def play(seed: int, program: list[tuple[str, int]]) -> tuple[Recorder, World]:
    recorder = Recorder()
    world = World(seed=seed, emit=recorder)
    apis: Any = world.apis()
    objects, npcs, bank = apis["game_objects"], apis["npcs"], apis["bank"]
    for move, ticks in program:
        target = {
            "mine": lambda: objects.find_nearest({"action": "Mine"}),
            "chop": lambda: objects.find_nearest("Tree"),
            "fish": lambda: objects.find_nearest("Fishing spot"),
            "pick": lambda: objects.find_nearest("Cabbage"),
            "attack": lambda: npcs.find_nearest({"name": ["Goblin", "Chicken", "Cow"]}),
        }.get(move, lambda: None)()
        if target is not None:
            target.interact()
        elif move == "bank":
            bank.open()
        elif move == "deposit":
            bank.deposit_all()
        elif move == "close":
            bank.close()
        elif move == "chat":
            apis["chat"].send(f"{move} {ticks}")
        for _ in range(ticks):
            world.step()
    return recorder, world


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), program=programs)
def test_same_seed_and_calls_replay_identically(seed: int, program: list[tuple[str, int]]) -> None:
    first, _ = play(seed, program)
    second, _ = play(seed, program)
    assert first.jsonable() == second.jsonable()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), program=programs)
def test_bookkeeping_matches_the_events(seed: int, program: list[tuple[str, int]]) -> None:
    recorder, world = play(seed, program)
    snap = world.snapshot()
    # Inventory: replaying inventory_changed gives the final counts; item:count() is the total.
    held: dict[str, int] = {}
    for d in recorder.of("inventory_changed"):
        name = d["item"].name()
        held[name] = held.get(name, 0) + d["change"]
        assert d["item"].count() == held[name] >= 0
    assert {k: v for k, v in held.items() if v} == snap["inventory"]
    assert 0 <= snap["empty_slots"] <= 28
    # Skills: xp_gained totals add up, and level_up fires once per level reached.
    for skill, value in snap["skills"].items():
        gains = [d for d in recorder.of("xp_gained") if d["skill"] == skill]
        base = 1154 if skill == "hitpoints" else 0
        assert value["xp"] == base + sum(d["xp"] for d in gains)
        if gains:
            assert gains[-1]["total"] == value["xp"]
        ups = [d["level"] for d in recorder.of("level_up") if d["skill"] == skill]
        start = 10 if skill == "hitpoints" else 1
        assert ups == list(range(start + 1, value["level"] + 1))
    # Combat: every start has one end, in order, and nothing overlaps.
    fights = [e.type for e in recorder.events if e.type.startswith("combat_")]
    assert all(a != b for a, b in itertools.pairwise(fights))
    assert not fights or fights[0] == "combat_started"
    assert (len(fights) % 2 == 1) == snap["player"]["is_in_combat"]
    # Bank: opened and closed alternate, and the last one says whether it is open.
    bank = [e.type for e in recorder.events if e.type.startswith("bank_")]
    assert all(a != b for a, b in itertools.pairwise(bank))
    assert (bank[-1:] == ["bank_opened"]) == snap["bank"]["open"]
    assert 0 < snap["player"]["health"] <= snap["player"]["max_health"]
