"""The panel, the final table and the summary file, rendered to a string."""

from __future__ import annotations

import json
import os
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from moonbus.cli.panel import PanelView, ScriptRow, final_table, render_panel
from moonbus.cli.summary import build_summary, check_writable, dumps, write_atomic
from moonbus.errors import ConfigError
from moonbus.runtime import LogLine
from moonbus.session.session import ScriptReport
from moonbus.world.app import world_line
from moonbus.world.world import World


def render(renderable: object) -> str:
    console = Console(file=StringIO(), width=120, color_system=None)
    console.print(renderable)
    out = console.file
    assert isinstance(out, StringIO)
    return out.getvalue()


def test_panel_shows_scripts_world_and_logs() -> None:
    world = world_line(World(seed=1, emit=lambda *a, **k: None).snapshot())
    view = PanelView(
        mode="virtual time",
        tick=42,
        seed=1,
        events=99,
        scripts=[ScriptRow("mining", "running", 40, 1, 2, {"ore": 7}, {"ores": {"Tin ore": 3}}),
                 ScriptRow("chat", "failed", 0, 0, 5, {}, {})],
        world=world,
        logs=[LogLine(41, "mining", "event", "warn", "inventory nearly full\nsecond line")],
    )
    text = render(render_panel(view))
    for expected in ("demo world · tick 42", "virtual time", "seed 1", "99 events", "mining",
                     "running",
                     "ore = 7", 'ores = {"Tin ore": 3}', "chat", "failed",
                     "Moonbus at 20,20", "hp 10/10", "idle", "inventory 0/28",
                     "[   41] mining/event warn: inventory nearly full"):
        assert expected in text, expected
    assert "second line" not in text


def test_world_line_while_busy() -> None:
    snapshot = {
        "player": {"name": "P", "x": 1, "y": 2, "health": 5, "max_health": 10,
                   "is_in_combat": False, "activity": {"action": "Mine", "target": "Rocks"}},
        "inventory": {"Tin ore": 2}, "empty_slots": 26,
        "skills": {"mining": {"level": 3, "xp": 200}, "hitpoints": {"level": 10, "xp": 1154},
                   "attack": {"level": 1, "xp": 0}},
        "bank": {"open": True},
    }
    assert world_line(snapshot) == (
        "P at 1,2 · hp 5/10 · Mine Rocks · inventory 2/28: Tin ore x2 · levels: mining 3 · "
        "bank open"
    )


def test_final_table() -> None:
    reports = [ScriptReport("mining", "failed", {"n": 1}, {}, 3, 2,
                            ("poll: a.lua:1: boom\nstack traceback: ...",))]
    text = render(final_table(reports, ticks=10, events=12))
    assert "moonbus run: 10 ticks, 12 events" in text
    assert "poll: a.lua:1: boom" in text and "stack traceback" not in text
    assert "n = 1" in text


def test_summary_document() -> None:
    reports = [ScriptReport("a", "running", {"x": 1}, {"s": "v"}, 5, 0, ()),
               ScriptReport("a#2", "stopped", {}, {}, 0, 1, ("e",))]
    doc = build_summary(ticks=3, seed=9, reports=reports, events={"tick": 3, "a": 1})
    assert doc == {
        "ticks": 3, "seed": 9,
        "scripts": {
            "a": {"status": "running", "shared": {"x": 1}, "stats": {"s": "v"}, "polls": 5,
                  "handler_errors": 0, "errors": []},
            "a#2": {"status": "stopped", "shared": {}, "stats": {}, "polls": 0,
                    "handler_errors": 1, "errors": ["e"]},
        },
        "events": {"total": 4, "by_type": {"a": 1, "tick": 3}},
    }
    assert json.loads(dumps(doc)) == doc
    assert dumps(doc).endswith("}\n")


def test_write_atomic_and_check_writable(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # no temporary left
    mode = target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    check_writable(target, "--summary")
    with pytest.raises(ConfigError, match="is a directory"):
        check_writable(tmp_path, "--summary")
    with pytest.raises(ConfigError, match="does not exist"):
        check_writable(tmp_path / "missing" / "s.json", "--summary")
