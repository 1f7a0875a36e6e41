"""Every example runs cleanly for 500 virtual ticks and does what it says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

Run = Callable[..., tuple[Result, Any]]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _positive(value: Any) -> bool:
    return isinstance(value, int) and value > 0


@pytest.mark.parametrize(
    ("example", "name", "expect"),
    [
        ("mining.lua", "mining",
         lambda s: _positive(s["ores"].get("Copper ore")) and _positive(s["ores"].get("Tin ore"))
         and _positive(s["trips"])),
        ("chat_monitor.lua", "chat_monitor",
         lambda s: all(_positive(s[k]) for k in ("public", "private", "trade"))
         and sum(s["senders"].values()) == s["public"] + s["private"] + s["trade"]),
        ("combat.lua", "combat",
         lambda s: _positive(s["kills"]) and s["damage"] >= 3 * s["kills"]
         and s["kills_by_target"] == {"Chicken": s["kills"]}),
        ("woodcutter.lua", "woodcutter", lambda s: _positive(s["logs"]) and _positive(s["trips"])),
        ("banker", "banker",
         lambda s: _positive(s["banked"]) and s["banked"] % 10 == 0
         and s["bank_visits"] == s["banked"] // 10),
    ],
)
def test_example_runs_500_ticks(summary_of: Run, example: str, name: str,
                                expect: Callable[[dict[str, Any]], bool]) -> None:
    result, summary = summary_of(EXAMPLES / example, "--ticks", "500", "--tick-ms", "0")
    assert result.exit_code == 0, result.output
    entry = summary["scripts"][name]
    assert entry["status"] == "running"
    assert entry["errors"] == [] and entry["handler_errors"] == 0
    assert entry["polls"] > 0
    assert expect(entry["shared"]), entry["shared"]


def test_example_options(summary_of: Run) -> None:
    result, summary = summary_of(EXAMPLES / "banker", "--ticks", "300", "--tick-ms", "0",
                                 "--option", "batch=4", "--option", "announce=false")
    assert result.exit_code == 0
    shared = summary["scripts"]["banker"]["shared"]
    assert shared["banked"] % 4 == 0 and shared["bank_visits"] == shared["banked"] // 4
    quiet_chat = summary["events"]["by_type"]["message_received"]
    loud, louder = summary_of(EXAMPLES / "banker", "--ticks", "300", "--tick-ms", "0",
                              "--option", "batch=4")
    assert loud.exit_code == 0
    # Each announcement comes back as one public message_received of our own, on
    # the tick after the trip (so the last one may still be pending at the end).
    visits = louder["scripts"]["banker"]["shared"]["bank_visits"]
    announced = louder["events"]["by_type"]["message_received"] - quiet_chat
    assert visits > 0 and visits - 1 <= announced <= visits
    cow, summary = summary_of(EXAMPLES / "combat.lua", "--ticks", "400", "--tick-ms", "0",
                              "--option", "target=Cow")
    assert cow.exit_code == 0
    assert set(summary["scripts"]["combat"]["shared"]["kills_by_target"]) == {"Cow"}
    nobody, summary = summary_of(EXAMPLES / "combat.lua", "--ticks", "10", "--tick-ms", "0",
                                 "--option", "target=Dragon")
    assert nobody.exit_code == 0
    assert summary["scripts"]["combat"]["status"] == "stopped"


def test_all_examples_together(summary_of: Run) -> None:
    paths = [EXAMPLES / p for p in ("chat_monitor.lua", "mining.lua", "mining.lua")]
    result, summary = summary_of(*paths, "--ticks", "200", "--tick-ms", "0",
                                 "--option", "mining#2:ore=tin")
    assert result.exit_code == 0
    assert list(summary["scripts"]) == ["chat_monitor", "mining", "mining#2"]
    assert all(s["errors"] == [] for s in summary["scripts"].values())
