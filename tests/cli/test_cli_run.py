"""``moonbus run`` driven as a user would: CliRunner in-process, files on disk."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from moonbus.store.factory import open_event_store

Run = Callable[..., tuple[Result, Any]]
Lua = Callable[[str, str], Path]

COUNTER = """
events.on(events.EventType.TICK, function(e)
  shared:int("ticks_seen"):increment()
end)
function on_start()
  logger.info("start " .. tostring(options.label))
end
function poll()
  shared:int("polls"):increment()
  return 600
end
function on_stop()
  logger.info("stop")
end
"""


def test_virtual_time_is_deterministic(summary_of: Run, examples: Path, tmp_path: Path,
                                        moonbus: Any) -> None:
    args = [examples / "mining.lua", examples / "chat_monitor.lua", "--ticks", "250",
            "--tick-ms", "0", "--seed", "3"]
    outputs = []
    for i in range(2):
        summary = tmp_path / f"s{i}.json"
        logs = tmp_path / f"l{i}.json"
        result = moonbus("run", *args, "--summary", summary, "--log-json", logs, "-q")
        assert result.exit_code == 0, result.output
        outputs.append((summary.read_bytes(), logs.read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] and outputs[0][1]
    # Another seed gives another world.
    other = tmp_path / "other.json"
    result = moonbus("run", *args[:-1], "4", "--summary", other, "-q")
    assert result.exit_code == 0
    assert other.read_bytes() != outputs[0][0]


def test_c_and_python_paths_give_the_same_run(examples: Path, tmp_path: Path, moonbus: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    args = [examples / "mining.lua", examples / "chat_monitor.lua", examples / "combat.lua",
            "--ticks", "300", "--tick-ms", "0", "-q"]
    outputs = []
    for pure in ("0", "1"):
        monkeypatch.setenv("MOONBUS_PURE_PYTHON", pure)
        summary, logs = tmp_path / f"s{pure}.json", tmp_path / f"l{pure}.json"
        result = moonbus("run", *args, "--summary", summary, "--log-json", logs)
        assert result.exit_code == 0, result.output
        outputs.append((summary.read_bytes(), logs.read_bytes()))
    assert outputs[0] == outputs[1]


def test_summary_shape(summary_of: Run, lua: Lua) -> None:
    script = lua("counter.lua", COUNTER)
    result, summary = summary_of(script, "--ticks", "20", "--tick-ms", "0", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert list(summary) == ["ticks", "seed", "scripts", "events"]
    assert summary["ticks"] == 20
    assert summary["seed"] == 5
    entry = summary["scripts"]["counter"]
    assert list(entry) == ["status", "shared", "stats", "polls", "handler_errors", "errors"]
    assert entry["status"] == "running"
    # on_start before the first tick, then one poll a tick (poll returns 600).
    assert entry["shared"] == {"ticks_seen": 20, "polls": 20}
    assert entry["polls"] == 20
    assert entry["handler_errors"] == 0
    assert entry["errors"] == []
    assert entry["stats"] == {}
    assert summary["events"]["by_type"]["tick"] == 20
    assert summary["events"]["total"] == sum(summary["events"]["by_type"].values())
    assert list(summary["events"]["by_type"]) == sorted(summary["events"]["by_type"])


def test_poll_delay_counts_virtual_milliseconds(summary_of: Run, lua: Lua) -> None:
    script = lua("slow.lua", "function poll() return 1200 end\n"
                             "function on_start() sleep(3000) end\n")
    result, summary = summary_of(script, "--ticks", "20", "--tick-ms", "0")
    assert result.exit_code == 0
    # on_start sleeps until tick 5 (3.0 s), the first poll comes a tick later,
    # then one poll every second tick.
    assert summary["scripts"]["slow"]["polls"] == len(range(6, 21, 2))


def test_event_counts_include_script_events(summary_of: Run, lua: Lua) -> None:
    script = lua("emitter.lua", 'function poll() events.emit("ping", {n = 1}) return 600 end')
    result, summary = summary_of(script, "--ticks", "10", "--tick-ms", "0")
    assert result.exit_code == 0
    # No on_start: the first poll runs before the first tick, then one a tick.
    assert summary["events"]["by_type"]["ping"] == 11
    assert summary["events"]["by_type"]["tick"] == 10


def test_log_json_lines(moonbus: Any, lua: Lua, tmp_path: Path) -> None:
    script = lua("counter.lua", COUNTER)
    logs = tmp_path / "log.ndjson"
    result = moonbus("run", script, "--ticks", "3", "--tick-ms", "0", "--option", "label=x",
                     "--log-json", logs, "-q")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in logs.read_text("utf-8").splitlines()]
    assert lines == [
        {"tick": 0, "script": "counter", "engine": "main", "level": "info", "msg": "start x"},
        {"tick": 3, "script": "counter", "engine": "main", "level": "info", "msg": "stop"},
    ]


def test_log_lines_echo_to_stderr_without_a_terminal(moonbus: Any, lua: Lua) -> None:
    script = lua("counter.lua", COUNTER)
    result = moonbus("run", script, "--ticks", "2", "--tick-ms", "0")
    assert result.exit_code == 0
    assert "[0] counter/main info: start nil" in result.stderr
    assert "moonbus run: 2 ticks" in result.stdout
    quiet = moonbus("run", script, "--ticks", "2", "--tick-ms", "0", "-q")
    assert quiet.stdout == "" and quiet.stderr == ""


def test_several_scripts_unique_names_and_targeted_options(summary_of: Run, lua: Lua) -> None:
    script = lua("counter.lua", 'function on_start() shared:string("label"):set('
                                'tostring(options.label) .. "/" .. tostring(options.n)) end')
    other = lua("other.lua", 'function on_start() shared:string("label"):set('
                             'tostring(options.label)) end')
    result, summary = summary_of(
        script, script, other, script, "--ticks", "1", "--tick-ms", "0",
        "--option", "label=all", "--option", "counter#2:label=second",
        "--option", "counter:n=7",
    )
    assert result.exit_code == 0, result.output
    assert list(summary["scripts"]) == ["counter", "counter#2", "other", "counter#3"]
    labels = {name: s["shared"]["label"] for name, s in summary["scripts"].items()}
    assert labels == {"counter": "all/7", "counter#2": "second/7", "other": "all",
                      "counter#3": "all/7"}


def test_option_values_are_typed_without_a_manifest(summary_of: Run, lua: Lua) -> None:
    script = lua("types.lua", 'function on_start()\n'
                              '  for k, v in pairs(options) do shared:string(k):set(math.type(v)'
                              ' or type(v)) end\nend')
    result, summary = summary_of(script, "--ticks", "0", "--tick-ms", "0", "--option", "i=5",
                                 "--option", "f=2.5", "--option", "b=true", "--option", "s=iron",
                                 "--option", "e=")
    assert result.exit_code == 0
    assert summary["scripts"]["types"]["shared"] == {
        "i": "integer", "f": "float", "b": "boolean", "s": "string", "e": "string"}


def test_syntax_error_exits_2_with_file_line_and_starts_nothing(
    moonbus: Any, lua: Lua, tmp_path: Path
) -> None:
    good = lua("good.lua", COUNTER)
    bad = lua("bad.lua", "function poll()\n  local x = = 1\nend\n")
    logs, summary, db = tmp_path / "l.json", tmp_path / "s.json", tmp_path / "e.db"
    result = moonbus("run", good, bad, "--ticks", "5", "--tick-ms", "0", "--log-json", logs,
                     "--summary", summary, "--events-db", db)
    assert result.exit_code == 2
    assert result.stderr == f"{bad}:2: unexpected symbol near '='\n"
    assert result.stdout == ""
    assert not logs.exists() and not summary.exists() and not db.exists()


def test_syntax_error_in_a_folder_module(moonbus: Any, tmp_path: Path) -> None:
    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "main.lua").write_text('local h = require("helper")\n')
    (folder / "helper.lua").write_text("return {\n\n  x = \n}\n")
    result = moonbus("run", "bot", "--ticks", "1", "--tick-ms", "0")
    assert result.exit_code == 2
    assert result.stderr.startswith("bot/helper.lua:4: unexpected symbol near '}'")


def test_missing_file_is_one_line_exit_2(moonbus: Any) -> None:
    result = moonbus("run", "nope.lua", "--ticks", "1")
    assert result.exit_code == 2
    assert result.stderr == "Error: script not found: nope.lua (try 'moonbus run --help')\n"


def test_bad_usage_is_one_line_exit_2(moonbus: Any, lua: Lua, tmp_path: Path) -> None:
    script = lua("counter.lua", COUNTER)
    cases = {
        ("--option", "novalue"): "bad --option 'novalue': expected KEY=VALUE",
        ("--option", "=x"): "bad --option '=x': empty option name",
        ("--option", "ghost:k=v"): "no script named 'ghost' (scripts: counter)",
        ("--frobnicate",): "No such option",
        ("--ticks", "-1"): "--ticks",
        ("--tick-ms", "fast"): "--tick-ms",
        ("--summary", str(tmp_path / "no" / "dir" / "s.json")): "does not exist",
        ("--log-json", str(tmp_path)): "is a directory",
    }
    for extra, expected in cases.items():
        result = moonbus("run", script, "--ticks", "1", "--tick-ms", "0", *extra)
        assert result.exit_code == 2, extra
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("Error: ") and expected in result.stderr, result.stderr


def test_manifest_defaults_type_the_options(summary_of: Run, tmp_path: Path) -> None:
    folder = tmp_path / "typed"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"options": {"n": 1, "name": "007"}}))
    (folder / "main.lua").write_text(
        'function on_start() shared:int("n"):set(options.n + 1) '
        'shared:string("name"):set(options.name) end')
    result, summary = summary_of(folder, "--ticks", "0", "--tick-ms", "0", "--option", "n=41",
                                 "--option", "name=42")
    assert result.exit_code == 0
    assert summary["scripts"]["typed"]["shared"] == {"n": 42, "name": "42"}
    bad, none = summary_of(folder, "--ticks", "0", "--tick-ms", "0", "--option", "n=many")
    assert bad.exit_code == 2 and none is None
    assert "option n='many': expected int" in bad.stderr


def test_a_failing_poll_exits_1(summary_of: Run, lua: Lua) -> None:
    broken = lua("broken.lua", 'function poll() error("boom") end')
    fine = lua("fine.lua", COUNTER)
    result, summary = summary_of(fine, broken, "--ticks", "30", "--tick-ms", "0")
    assert result.exit_code == 1
    entry = summary["scripts"]["broken"]
    assert entry["status"] == "failed"
    assert entry["polls"] == 0
    assert any("boom" in e and "broken.lua:1" in e for e in entry["errors"])
    assert any("consecutive poll failures" in e for e in entry["errors"])
    assert summary["scripts"]["fine"]["status"] == "running"
    assert summary["ticks"] == 30  # the run goes on while another script runs


def test_run_ends_when_no_script_is_left(summary_of: Run, lua: Lua) -> None:
    broken = lua("broken.lua", 'function poll() error("boom") end')
    result, summary = summary_of(broken, "--ticks", "1000", "--tick-ms", "0")
    assert result.exit_code == 1
    assert summary["ticks"] < 10


def test_top_level_error_fails_that_script_only(summary_of: Run, lua: Lua) -> None:
    bad = lua("toplevel.lua", 'error("bad option")\n')
    fine = lua("fine.lua", COUNTER)
    result, summary = summary_of(bad, fine, "--ticks", "5", "--tick-ms", "0")
    assert result.exit_code == 1
    assert summary["scripts"]["toplevel"]["status"] == "failed"
    assert "bad option" in summary["scripts"]["toplevel"]["errors"][0]
    assert summary["scripts"]["fine"]["shared"]["ticks_seen"] == 5


def test_on_start_false_is_stopped_not_failed(summary_of: Run, lua: Lua) -> None:
    script = lua("declines.lua", "function on_start() return false end")
    result, summary = summary_of(script, "--ticks", "5", "--tick-ms", "0")
    assert result.exit_code == 0
    assert summary["scripts"]["declines"]["status"] == "stopped"


def test_events_db_records_every_event(moonbus: Any, lua: Lua, tmp_path: Path) -> None:
    script = lua("counter.lua", COUNTER)
    db = tmp_path / "events.db"
    summary = tmp_path / "s.json"
    result = moonbus("run", script, "--ticks", "15", "--tick-ms", "0", "--events-db", db,
                     "--summary", summary, "-q")
    assert result.exit_code == 0
    by_type = json.loads(summary.read_text())["events"]["by_type"]
    store = open_event_store(f"sqlite:///{db}")
    try:
        assert store.summary() == by_type
    finally:
        store.close()
    conn = sqlite3.connect(db)  # a plain SQLite file any tool can read
    try:
        assert conn.execute("select count(*) from events").fetchone()[0] == sum(by_type.values())
    finally:
        conn.close()


def test_real_time_run(summary_of: Run, lua: Lua) -> None:
    script = lua("counter.lua", COUNTER)
    result, summary = summary_of(script, "--ticks", "5", "--tick-ms", "20")
    assert result.exit_code == 0, result.output
    entry = summary["scripts"]["counter"]
    assert summary["ticks"] == 5
    assert entry["status"] == "running"
    assert entry["shared"]["ticks_seen"] == 5
    assert entry["polls"] >= 1


def test_deferred_event_delivery_gives_the_same_run(moonbus: Any, examples: Path,
                                                    tmp_path: Path) -> None:
    """--event-delivery deferred: handlers run after each tick's emits instead
    of inside them; every event still reaches them, so the summary is the
    same, and a virtual-time run stays deterministic."""
    args = [examples / "mining.lua", examples / "chat_monitor.lua", examples / "combat.lua",
            "--ticks", "300", "--tick-ms", "0", "-q"]
    outputs = []
    for mode in ("immediate", "deferred", "deferred"):
        summary = tmp_path / f"s-{mode}-{len(outputs)}.json"
        result = moonbus("run", *args, "--summary", summary, "--event-delivery", mode)
        assert result.exit_code == 0, result.output
        outputs.append(summary.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_deferred_event_delivery_in_real_time(summary_of: Run, lua: Lua) -> None:
    script = lua("counter.lua", COUNTER)
    result, summary = summary_of(script, "--ticks", "5", "--tick-ms", "20",
                                 "--event-delivery", "deferred")
    assert result.exit_code == 0, result.output
    assert summary["scripts"]["counter"]["shared"]["ticks_seen"] == 5


def test_unknown_event_delivery_is_a_usage_error(moonbus: Any, lua: Lua) -> None:
    result = moonbus("run", lua("counter.lua", COUNTER), "--event-delivery", "later")
    assert result.exit_code == 2
    assert "'later' is not one of 'immediate', 'deferred'" in result.output


def test_live_panel_on_a_terminal(moonbus: Any, lua: Lua,
                                  monkeypatch: Any) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat the captured stdout as a terminal
    script = lua("counter.lua", COUNTER)
    result = moonbus("run", script, "--ticks", "5", "--tick-ms", "0")
    assert result.exit_code == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert "Ctrl-C stops the scripts" in screen
    assert "recent log" in screen
    assert "counter/main info: start nil" in screen  # log lines go to the panel...
    assert result.stderr == ""  # ...not to stderr
    assert "moonbus run: 5 ticks" in screen
