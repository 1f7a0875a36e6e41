"""The demo world as an ``App``: what ``moonbus run`` drives when ``--app`` is omitted.

It goes through exactly the interface a real game uses (``moonbus.app``), so
the panel, the summary, RCON and ``check --strict`` behave the same for the
demo and for a game of one's own. ``app`` is immutable: each ``create`` builds
a fresh ``World``.

The demo keeps SPEC §8's summary document as it is: its ``summary()`` is
``None`` (its state is on the live panel and in the event log).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from moonbus.app import EventSpec
from moonbus.bus import Bus
from moonbus.world import events as ev
from moonbus.world.world import World, WorldApis

__all__ = ["DEMO_EVENTS", "DemoApp", "DemoWorld", "app", "world_line"]

#: The demo world's event types with their payload fields (SPEC §9).
DEMO_EVENTS: Final[tuple[EventSpec, ...]] = (
    EventSpec(ev.TICK, ("tick",)),
    EventSpec(ev.GAME_ACTION,
              ("interaction", "action", "target", "scene_x", "scene_y", "entity_idx")),
    EventSpec(ev.MESSAGE_RECEIVED, ("msg_type", "sender", "content")),
    EventSpec(ev.INVENTORY_CHANGED, ("item", "change")),
    EventSpec(ev.LEVEL_UP, ("skill", "level")),
    EventSpec(ev.XP_GAINED, ("skill", "xp", "total")),
    EventSpec(ev.COMBAT_STARTED, ("target",)),
    EventSpec(ev.COMBAT_ENDED, ("target", "reason", "damage_dealt")),
    EventSpec(ev.BANK_OPENED),
    EventSpec(ev.BANK_CLOSED),
)


def world_line(world: Mapping[str, Any]) -> str:
    """One line about the player: position, health, activity, inventory, trained skills."""
    player = world.get("player", {})
    parts = [f"{player.get('name', '?')} at {player.get('x')},{player.get('y')}",
             f"hp {player.get('health')}/{player.get('max_health')}"]
    activity = player.get("activity")
    if activity:
        parts.append(f"{activity['action']} {activity['target']}")
    elif player.get("is_in_combat"):
        parts.append("in combat")
    else:
        parts.append("idle")
    inventory = world.get("inventory", {})
    used = 28 - int(world.get("empty_slots", 28))
    items = ", ".join(f"{name} x{n}" for name, n in inventory.items())
    parts.append(f"inventory {used}/28" + (f": {items}" if items else ""))
    skills = world.get("skills", {})
    trained = [f"{name} {s['level']}" for name, s in skills.items()
               if s.get("xp") and name != "hitpoints"]
    if trained:
        parts.append("levels: " + ", ".join(trained))
    if world.get("bank", {}).get("open"):
        parts.append("bank open")
    return " · ".join(parts)


class DemoWorld:
    """``World`` seen as an ``AppWorld`` (threads: see ``moonbus.world.world``)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def tick(self) -> int:
        return self.world.tick

    def apis(self) -> WorldApis:
        return self.world.apis()

    def step(self) -> int:
        return self.world.step()

    def status_line(self) -> str:
        return world_line(self.world.snapshot())

    def summary(self) -> Mapping[str, Any] | None:
        return None


@dataclass(frozen=True)
class DemoApp:
    """The demo world's description and factory (``--app moonbus.world.app:app``)."""

    player_name: str = "Moonbus"

    @property
    def name(self) -> str:
        return "demo world"

    def event_types(self) -> Sequence[EventSpec]:
        return DEMO_EVENTS

    def create(self, *, seed: int, bus: Bus) -> DemoWorld:
        return DemoWorld(World(seed=seed, emit=bus.emit, player_name=self.player_name))


app: Final = DemoApp()
