"""The demo world: a small deterministic tick-based game in the spirit of an
old-school MMO, so that ``moonbus run script.lua`` has a game to drive and tests
have a world to play in. See ``moonbus.world.world`` for threading and
determinism, ``moonbus.world.api`` for what scripts can call.
"""

from moonbus.world.events import EVENT_TYPES
from moonbus.world.items import Item
from moonbus.world.world import World, WorldApis

__all__ = ["EVENT_TYPES", "Item", "World", "WorldApis"]
