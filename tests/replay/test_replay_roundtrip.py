"""Record a run, replay it: identical; change a script: the first divergence, at the right seq."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from replay_support import EXAMPLES, Record, write

from moonbus.errors import ConfigError
from moonbus.replay import Recording, replay


def first_script_event(path: Path, source: str, type_: str) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT seq, tick FROM events WHERE source = ? AND type = ? "
                         "ORDER BY seq LIMIT 1", (source, type_)).fetchone()
    return int(row[0]), int(row[1])


def test_a_virtual_run_replays_identically(record: Record, scripts: dict[str, Path]) -> None:
    path = record([scripts["probe"], scripts["walker"], EXAMPLES / "mining.lua"], ticks=80)
    result = replay(path)
    assert result.identical, result.describe()
    assert result.counts["script_events"] > 20
    assert result.counts["calls"] > 50
    assert result.counts["ticks"] == 80
    assert result.describe().startswith("identical: ")
    with Recording(path) as rec:
        assert [s.name for s in rec.scripts()] == ["probe", "walker", "mining"]
        assert rec.meta["seed"] == 7 and rec.meta["ticks"] == 80
        final = rec.final()
    assert final["probe"]["shared"] == {"probes": 20}
    assert final["walker"]["status"] == "stopped"


def test_a_changed_constant_diverges_at_the_first_event_it_changes(
        record: Record, scripts: dict[str, Path], tmp_path: Path) -> None:
    path = record([scripts["probe"], scripts["walker"]], ticks=40)
    changed = write(tmp_path, "probe_v2.lua",
                    scripts["probe"].read_text().replace("STEP = 3", "STEP = 4"))
    result = replay(path, scripts={"probe": changed})
    div = result.divergence
    assert div is not None
    seq, tick = first_script_event(path, "script:probe", "probe")
    assert (div.kind, div.seq, div.tick, div.script) == ("event", seq, tick, "probe")
    assert '"step": 12' in div.expected and '"step": 16' in div.actual
    assert f"at seq {seq} (tick {tick}), script probe" in result.describe()


def test_a_changed_api_call_is_a_divergence_naming_the_script(
        record: Record, scripts: dict[str, Path], tmp_path: Path) -> None:
    path = record([scripts["probe"], scripts["walker"]], ticks=20)
    changed = write(tmp_path, "probe_v2.lua",
                    scripts["probe"].read_text().replace('level("mining")', 'level("fishing")'))
    div = replay(path, scripts={"probe": changed}).divergence
    assert div is not None
    assert (div.kind, div.script) == ("api call", "probe")
    assert 'level("mining")' in div.expected and 'level("fishing")' in div.actual


def test_a_final_value_that_differs_is_reported(record: Record, scripts: dict[str, Path],
                                                tmp_path: Path) -> None:
    path = record([scripts["walker"]], ticks=20)
    changed = write(tmp_path, "walker_v2.lua", scripts["walker"].read_text().replace(
        'shared:int("trips"):set(trips)', 'shared:int("trips"):set(trips * 2)'))
    div = replay(path, scripts={"walker": changed}).divergence
    assert div is not None and div.kind == "final value" and div.script == "walker"
    assert "shared" in div.expected


def test_until_stops_early_and_compares_only_up_to_it(record: Record,
                                                      scripts: dict[str, Path],
                                                      tmp_path: Path) -> None:
    path = record([scripts["probe"]], ticks=40)
    seq, tick = first_script_event(path, "script:probe", "probe")
    changed = write(tmp_path, "probe_v2.lua",
                    scripts["probe"].read_text().replace("STEP = 3", "STEP = 4"))
    early = replay(path, scripts={"probe": changed}, until=seq - 1)
    assert early.identical, early.describe()
    assert early.counts["ticks"] <= tick
    assert not replay(path, scripts={"probe": changed}, until=seq).identical


def test_bad_input_is_a_config_error(tmp_path: Path, record: Record,
                                     scripts: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="no recording"):
        replay(tmp_path / "missing.mbrec")
    junk = tmp_path / "junk.mbrec"
    junk.write_text("not sqlite")
    with pytest.raises(ConfigError, match="not a moonbus recording"):
        replay(junk)
    path = record([scripts["probe"]], ticks=2)
    with pytest.raises(ConfigError, match="no script 'nope'"):
        replay(path, scripts={"nope": scripts["probe"]})


def test_result_json_is_one_object(record: Record, scripts: dict[str, Path]) -> None:
    result = replay(record([scripts["probe"]], ticks=8))
    doc = json.loads(result.to_json())
    assert doc["identical"] is True and doc["divergence"] is None
    assert doc["counts"]["script_events"] == result.counts["script_events"]


def test_no_file_is_left_when_the_session_cannot_start(tmp_path: Path,
                                                       scripts: dict[str, Path]) -> None:
    from moonbus.app import load_app
    from moonbus.session.plan import plan_scripts
    from moonbus.session.session import Session

    out = tmp_path / "never.mbrec"
    with pytest.raises(ConfigError):
        Session(plan_scripts((str(scripts["probe"]),), ()), seed=1, app=load_app(None),
                virtual=True, events_url="bogus://nowhere", record=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scripts"]


def test_each_script_has_its_own_stand_ins(record: Record, scripts: dict[str, Path]) -> None:
    path = record([scripts["probe"], scripts["walker"]], ticks=12)
    with sqlite3.connect(path) as db:
        owners = dict(db.execute("SELECT DISTINCT o.script, count(*) FROM calls c "
                                 "JOIN objects o ON o.id = c.obj GROUP BY o.script"))
        apis = json.loads(db.execute("SELECT value FROM meta WHERE key = 'apis'").fetchone()[0])
    assert set(owners) == {"probe", "walker"}
    assert {"", "probe", "walker"} <= set(apis)
    assert apis["probe"]["players"] != apis["walker"]["players"]


def test_a_recorded_api_error_is_raised_again_with_its_message(record: Record,
                                                               tmp_path: Path) -> None:
    script = write(tmp_path, "asker.lua", """
events.on("tick", function(e)
  local ok, err = pcall(function() return skills:level("knitting") end)
  events.emit("asked", {ok = ok, err = tostring(err)})
end)
""")
    path = record([script], ticks=3)
    with sqlite3.connect(path) as db:
        error = db.execute("SELECT error FROM calls WHERE error IS NOT NULL").fetchone()[0]
        emitted = db.execute("SELECT data FROM events WHERE type = 'asked'").fetchone()[0]
    assert "unknown skill 'knitting'" in json.loads(error)["message"]
    assert "unknown skill 'knitting'" in json.loads(emitted)["err"]
    result = replay(path)
    assert result.identical, result.describe()
    assert result.counts["script_events"] == 3
