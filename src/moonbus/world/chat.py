"""Chat: the local player's lines and the simulated players' messages.

Called with the world's lock held (see ``state``). The simulated players draw
from their own random stream, a fixed three draws per tick, so the chat a seed
produces is the same whatever scripts do. Each tick: about 10% a public line
(``msg_type`` 0), 3% a trade request (``msg_type`` 4, content "<name> wishes to
trade with you."), 3% a private message (``msg_type`` 7). Public lines never
contain the word "trade".

The local player's lines (``chat:send``) appear on the next tick as public
``message_received`` events with the local player as sender, as the game shows
your own chat. At most ``MAX_PENDING_LINES`` lines wait per tick, so a script
that answers its own messages cannot flood the world.
"""

from __future__ import annotations

from typing import Final

from moonbus.errors import GameApiError
from moonbus.world.content import CHAT_NAMES, PRIVATE_LINES, PUBLIC_LINES
from moonbus.world.events import MESSAGE_RECEIVED, MSG_PRIVATE, MSG_PUBLIC, MSG_TRADE_REQUEST
from moonbus.world.state import WorldState

__all__ = ["MAX_LINE_LENGTH", "MAX_PENDING_LINES", "chat_tick", "send"]

MAX_LINE_LENGTH: Final = 80
MAX_PENDING_LINES: Final = 5

_PUBLIC_CHANCE = 0.10
_TRADE_CHANCE = 0.03
_PRIVATE_CHANCE = 0.03


def send(state: WorldState, text: object) -> bool:
    """Queue a public line for the next tick; False when too many lines are waiting."""
    if not isinstance(text, str):
        raise GameApiError(f"chat:send expects a string, got {type(text).__name__}")
    line = text.strip()
    if not line:
        raise GameApiError("chat:send got an empty message")
    if len(line) > MAX_LINE_LENGTH:
        raise GameApiError(
            f"chat:send message is {len(line)} characters; the limit is {MAX_LINE_LENGTH}"
        )
    if len(state.outgoing_chat) >= MAX_PENDING_LINES:
        return False
    state.outgoing_chat.append(line)
    return True


def chat_tick(state: WorldState) -> None:
    """Emit the local player's waiting lines, then maybe one simulated message."""
    for line in state.outgoing_chat:
        state.event(MESSAGE_RECEIVED, msg_type=MSG_PUBLIC, sender=state.player.name, content=line)
    state.outgoing_chat.clear()

    rng = state.chat_rng
    roll = rng.random()
    sender = CHAT_NAMES[rng.randrange(len(CHAT_NAMES))]
    pick = rng.random()
    if roll < _PUBLIC_CHANCE:
        msg_type, content = MSG_PUBLIC, PUBLIC_LINES[int(pick * len(PUBLIC_LINES))]
    elif roll < _PUBLIC_CHANCE + _TRADE_CHANCE:
        msg_type, content = MSG_TRADE_REQUEST, f"{sender} wishes to trade with you."
    elif roll < _PUBLIC_CHANCE + _TRADE_CHANCE + _PRIVATE_CHANCE:
        line = PRIVATE_LINES[int(pick * len(PRIVATE_LINES))]
        msg_type, content = MSG_PRIVATE, line.format(player=state.player.name)
    else:
        return
    state.event(MESSAGE_RECEIVED, msg_type=msg_type, sender=sender, content=content)
