"""The example scripts, tested the way their authors would: with the test kit.

Each test drives the demo world in virtual time through ``moonbus_sim``
(``moonbus.testing``) and checks what the script is for: mining counts its
ore and banks when full, combat counts kills and refuses an unknown target,
chat_monitor sorts messages, woodcutter counts logs from a deferred
handler, banker (a folder script) banks in batches; the grid game's
collector (``--app examples.grid_game:app``) picks up gems. A few hundred
ticks each, well under a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moonbus.testing import SimFactory

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_mining_counts_ore_and_banks_a_full_inventory(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(seed=0, root=EXAMPLES)
    mining = sim.load("mining.lua")
    sim.assert_logged("starts mining copper/tin at mining level 1", script=mining)
    sim.advance_until(lambda: sim.shared(mining).int("trips").get() == 1, max_ticks=600,
                      what="first bank trip")
    ores = sim.shared(mining).table("ores").to_table()
    assert set(ores) == {"Copper ore", "Tin ore"} and sum(ores.values()) >= 27
    sim.assert_emitted("bank_opened", count=1)
    assert sim.stats(mining)["bank trips"] == 1
    sim.stop(mining)
    sim.assert_logged("stopped; ore mined: Copper ore=", script=mining)
    sim.assert_no_errors()


def test_mining_one_ore_only(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(seed=0, root=EXAMPLES)
    mining = sim.load("mining.lua", {"ore": "tin"})
    sim.advance(150)
    assert list(sim.shared(mining).table("ores").to_table()) == ["Tin ore"]
    sim.assert_no_errors()


def test_combat_kills_chickens_and_logs_levels(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(seed=0, root=EXAMPLES)
    combat = sim.load("combat.lua")
    sim.advance_until(lambda: sim.shared(combat).int("kills").get() >= 3, max_ticks=500,
                      what="three kills")
    kills = sim.emitted("combat_ended", where={"reason": "killed", "target": "Chicken"})
    assert len(kills) == sim.shared(combat).int("kills").get()
    assert sim.shared(combat).table("kills_by_target").get("Chicken") == len(kills)
    sim.assert_no_errors()


def test_combat_refuses_a_target_that_is_not_in_the_world(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(root=EXAMPLES)
    combat = sim.load("combat.lua", {"target": "Dragon"})
    sim.advance(2)
    sim.assert_logged("no NPC called Dragon in this world", script=combat, level="error")
    assert sim.status(combat) == "stopped"
    sim.assert_not_emitted("combat_started")


def test_chat_monitor_sorts_messages(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(root=EXAMPLES)
    chat = sim.load("chat_monitor.lua")
    sim.emit("message_received", {"sender": "Zed", "content": "psst", "msg_type": 7})
    sim.emit("message_received", {"sender": "Ann", "content": "trade logs?", "msg_type": 0})
    sim.emit("message_received", {"sender": "Ann", "content": "hi all", "msg_type": 0})
    shared = sim.shared(chat)
    assert (shared.int("private").get(), shared.int("trade").get(),
            shared.int("public").get()) == (1, 1, 1)
    assert shared.table("senders").to_table() == {"Zed": 1, "Ann": 2}
    sim.assert_logged("private from Zed: psst", script=chat, level="info")
    sim.assert_logged("trade request from Ann (#1)", script=chat, level="warn")
    sim.advance(10)
    assert sim.stats(chat)["chattiest"].startswith("Ann")
    sim.assert_no_errors()


def test_woodcutter_counts_logs_from_its_deferred_handler(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(seed=2, root=EXAMPLES)
    wood = sim.load("woodcutter.lua")
    sim.advance_until(lambda: sim.shared(wood).int("logs").get() >= 5, max_ticks=400,
                      what="five logs")
    gained = sum(e.data["change"] for e in sim.emitted("inventory_changed")
                 if e.data["change"] > 0 and e.data["item"].name() == "Logs")
    assert sim.shared(wood).int("logs").get() == gained
    sim.assert_no_errors()


def test_banker_banks_in_batches_and_says_so(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(seed=0, root=EXAMPLES)
    banker = sim.load("banker", {"batch": 3})
    sim.advance_until(lambda: sim.shared(banker).int("bank_visits").get() >= 2, max_ticks=600,
                      what="two bank visits")
    assert sim.shared(banker).int("banked").get() >= 3
    sim.assert_emitted("message_received", where={"content": "banked 3 cabbage, 3 so far"})
    sim.assert_no_errors()


def test_banker_keeps_quiet_when_told(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(seed=0, root=EXAMPLES)
    banker = sim.load("banker", {"batch": 3, "announce": False})
    sim.advance_until(lambda: sim.shared(banker).int("banked").get() >= 3, max_ticks=600,
                      what="first batch banked")
    assert not [e for e in sim.emitted("message_received")
                if str(e.data.get("content", "")).startswith("banked")]


def test_grid_collector_gathers_gems_the_watcher_counts(
    moonbus_sim: SimFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(EXAMPLES.parent)  # where examples.grid_game is imported from
    sim = moonbus_sim(app="examples.grid_game:app", seed=0, root=EXAMPLES / "grid")
    collector = sim.load("collector.lua")
    watcher = sim.load("watcher.lua")
    sim.advance_until(lambda: sim.shared(collector).int("collected").get() >= 3,
                      max_ticks=300, what="three gems collected")
    gems = sim.emitted("gem_collected")
    assert len(gems) == sim.shared(collector).int("collected").get()
    assert sim.shared(watcher).int("collected").get() == len(gems)
    sim.assert_logged(f"gem at {gems[0].data['x']},{gems[0].data['y']}", script=collector)
    sim.assert_no_errors()
