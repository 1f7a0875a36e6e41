"""The per-frame suite runs, and its moonbus loop and its plain-Python peer agree."""

from __future__ import annotations

import math
from pathlib import Path

from moonbus.bench import frame


def test_quick_run_reports_mean_and_p99_for_both_store_modes() -> None:
    rows = frame.run(quick=True)
    assert [r.name.rsplit(": ", 1)[1] for r in rows] == ["mean", "p99", "mean", "p99"]
    assert ["store fast" in r.name for r in rows] == [True, True, False, False]
    for row in rows:
        assert row.area == "frame" and row.unit == "us/frame"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ok in (True, False)


def test_the_scripts_and_the_peer_apply_the_same_rules(tmp_path: Path) -> None:
    """Same moves from Lua and from Python: the row compares like with like."""
    from moonbus.runtime import Runtime

    lua_world = frame.EntityWorld()
    clock = frame._Clock()
    script = tmp_path / "entity.lua"
    script.write_text(frame.RULES_LUA)
    with Runtime(threaded=False, clock=clock) as rt:
        rt.register_api("world", lua_world)
        for i in range(frame.ENTITIES):
            rt.load(script, {"id": i}, name=f"e{i}").start()
        for f in range(40):
            rt.bus.emit("tick", {"frame": f}, tick=f)
            rt.run_due()
    py_world = frame.EntityWorld()
    for f in range(40):
        for entity in range(frame.ENTITIES):
            frame._python_rule(py_world, entity, f)
    assert lua_world._pos == py_world._pos
