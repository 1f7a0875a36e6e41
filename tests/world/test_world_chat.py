"""Chat: simulated players (public, trade requests, private) and the local player's lines."""

from __future__ import annotations

from typing import Any

import pytest
from world_support import Recorder

from moonbus.errors import GameApiError
from moonbus.world import World
from moonbus.world.chat import MAX_LINE_LENGTH, MAX_PENDING_LINES
from moonbus.world.content import CHAT_NAMES
from moonbus.world.events import MSG_PRIVATE, MSG_PUBLIC, MSG_TRADE_REQUEST


def run(world: World, ticks: int) -> None:
    for _ in range(ticks):
        world.step()


def test_simulated_players_send_all_three_kinds(world: World, recorder: Recorder) -> None:
    run(world, 400)
    messages = recorder.of("message_received")
    kinds = {m["msg_type"] for m in messages}
    assert kinds == {MSG_PUBLIC, MSG_TRADE_REQUEST, MSG_PRIVATE}
    for m in messages:
        assert m["sender"] in CHAT_NAMES
        assert m["content"]
        if m["msg_type"] == MSG_TRADE_REQUEST:
            assert m["content"] == f"{m['sender']} wishes to trade with you."
            assert "trade" in m["content"]
        else:
            # Trade requests are the only messages containing "trade".
            assert "trade" not in m["content"].lower()
    private = [m for m in messages if m["msg_type"] == MSG_PRIVATE]
    assert any("Moonbus" in m["content"] for m in private)
    assert "{player}" not in "".join(m["content"] for m in private)
    # At most one simulated message per tick.
    ticks = [m["tick"] for m in messages]
    assert len(ticks) == len(set(ticks))


def test_local_player_line_appears_on_the_next_tick(
    world: World, apis: dict[str, Any], recorder: Recorder
) -> None:
    world.step()
    assert apis["chat"].send("  hello world  ") is True
    assert recorder.of("message_received") == [
        m for m in recorder.of("message_received") if m["sender"] != "Moonbus"
    ]
    world.step()
    mine = [m for m in recorder.of("message_received") if m["sender"] == "Moonbus"]
    expected = {"msg_type": MSG_PUBLIC, "sender": "Moonbus", "content": "hello world", "tick": 2}
    assert mine == [expected]
    after_tick = [e.type for e in recorder.events if e.tick == 2]
    assert after_tick[:2] == ["tick", "message_received"]


def test_pending_lines_are_bounded(world: World, apis: dict[str, Any], recorder: Recorder) -> None:
    chat = apis["chat"]
    assert all(chat.send(f"line {i}") for i in range(MAX_PENDING_LINES))
    assert chat.send("one too many") is False
    world.step()
    mine = [m["content"] for m in recorder.of("message_received") if m["sender"] == "Moonbus"]
    assert mine == [f"line {i}" for i in range(MAX_PENDING_LINES)]
    assert chat.send("room again") is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "expects a string"),
        (42, "expects a string"),
        ("   ", "empty"),
        ("x" * (MAX_LINE_LENGTH + 1), "limit is 80"),
    ],
)
def test_bad_chat_text_is_an_error(apis: dict[str, Any], text: object, problem: str) -> None:
    with pytest.raises(GameApiError, match=problem):
        apis["chat"].send(text)


def test_custom_player_name_is_the_sender(recorder: Recorder) -> None:
    world = World(seed=3, emit=recorder, player_name="Zed")
    world.apis()["chat"].send("hi")
    world.step()
    assert {"sender": "Zed", "content": "hi"}.items() <= recorder.of("message_received")[0].items()
    assert world.apis()["players"].local_player().name() == "Zed"
