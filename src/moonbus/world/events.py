"""Names of the demo world's built-in event types and chat message kinds.

These are the strings of SPEC §9; the script host builds the Lua
``events.EventType`` table from ``EVENT_TYPES``. Constants only: nothing here
changes at run time, so any thread may read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "BANK_CLOSED",
    "BANK_OPENED",
    "COMBAT_ENDED",
    "COMBAT_STARTED",
    "EVENT_TYPES",
    "GAME_ACTION",
    "INVENTORY_CHANGED",
    "LEVEL_UP",
    "MESSAGE_RECEIVED",
    "MSG_PRIVATE",
    "MSG_PUBLIC",
    "MSG_TRADE_REQUEST",
    "TICK",
    "XP_GAINED",
]

TICK: Final = "tick"
GAME_ACTION: Final = "game_action"
MESSAGE_RECEIVED: Final = "message_received"
INVENTORY_CHANGED: Final = "inventory_changed"
LEVEL_UP: Final = "level_up"
XP_GAINED: Final = "xp_gained"
COMBAT_STARTED: Final = "combat_started"
COMBAT_ENDED: Final = "combat_ended"
BANK_OPENED: Final = "bank_opened"
BANK_CLOSED: Final = "bank_closed"

#: ``EventType`` key (as scripts write it) → event type string.
EVENT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "TICK": TICK,
        "GAME_ACTION": GAME_ACTION,
        "MESSAGE_RECEIVED": MESSAGE_RECEIVED,
        "INVENTORY_CHANGED": INVENTORY_CHANGED,
        "LEVEL_UP": LEVEL_UP,
        "XP_GAINED": XP_GAINED,
        "COMBAT_STARTED": COMBAT_STARTED,
        "COMBAT_ENDED": COMBAT_ENDED,
        "BANK_OPENED": BANK_OPENED,
        "BANK_CLOSED": BANK_CLOSED,
    }
)

#: ``msg_type`` of ``message_received``: public chat (also the local player's own lines).
MSG_PUBLIC: Final = 0
#: ``msg_type`` of a trade request; its content reads "<name> wishes to trade with you."
MSG_TRADE_REQUEST: Final = 4
#: ``msg_type`` of a private message sent to the local player.
MSG_PRIVATE: Final = 7
