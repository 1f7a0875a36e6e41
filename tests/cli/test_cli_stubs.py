"""``moonbus stubs``: LuaLS definitions and a luacheck config that know every global.

luacheck (Debian's ``lua-check``, installed by ``.ci/run``) lints every
example clean with the generated config and still flags a misspelt host
global and a misspelt moonbus function; outside CI the luacheck tests skip
when it is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke

from moonbus.host.reference import Reference
from moonbus.host.stubs import lua_type


def _luacheck() -> str:
    found = shutil.which("luacheck")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("luacheck is missing in CI (.ci/run installs Debian's lua-check)")
        pytest.skip("luacheck is not installed (apt-get install lua-check)")
    return found


def _stubs(moonbus: Invoke, tmp_path: Path) -> Path:
    out = tmp_path / "project"
    result = moonbus("stubs", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_writes_meta_luarc_and_luacheckrc(moonbus: Invoke, tmp_path: Path) -> None:
    out = _stubs(moonbus, tmp_path)
    meta = (out / "moonbus_meta" / "moonbus.lua").read_text()
    assert meta.startswith("---@meta")
    for g in Reference().moonbus:
        assert f"\n{g.name} = " in meta or f"function {g.name}(" in meta, g.name
    # the demo world's @lua_api classes, typed from their Python hints
    assert "---@type Players\nplayers = {}" in meta
    assert "---@return Player\nfunction Players:local_player() end" in meta
    assert "---@return integer\nfunction Player:health() end" in meta
    assert "function GameObjects:find_nearest(query) end" in meta
    assert 'TICK = "tick"' in meta
    luarc = json.loads((out / ".luarc.json").read_text())
    assert luarc["workspace.library"] == ["moonbus_meta"]
    assert luarc["runtime.version"] == "Lua 5.4"


def test_python_hints_become_luals_types() -> None:
    from moonbus.world.api import Npc

    assert lua_type(int) == "integer"
    assert lua_type(float | None) == "number?"
    assert lua_type(list[Npc]) == "Npc[]"
    assert lua_type(dict[str, int]) == "table<string, integer>"
    assert lua_type(str | int) == "string|integer"
    assert lua_type(object) == "any"


def _lint(luacheck: str, cwd: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([luacheck, "--no-color", *files], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_examples_lint_clean_with_the_generated_config(
    moonbus: Invoke, tmp_path: Path, examples: Path
) -> None:
    luacheck = _luacheck()
    out = _stubs(moonbus, tmp_path)
    # The demo world's examples (examples/grid/ is the grid game's: see test_cli_app).
    shutil.copytree(examples, out / "examples", ignore=shutil.ignore_patterns("*.py", "grid"))
    done = _lint(luacheck, out, "examples")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 warnings / 0 errors" in done.stdout


def test_a_misspelt_global_is_flagged(moonbus: Invoke, tmp_path: Path) -> None:
    luacheck = _luacheck()
    out = _stubs(moonbus, tmp_path)
    (out / "typo.lua").write_text(
        "function poll()\n"
        "  playres:local_player()\n"          # host global misspelt
        "  events.onn('tick', print)\n"       # moonbus function misspelt
        "  logger.info(events.EventType.TICKK)\n"  # undeclared event name
        "  return 600\n"
        "end\n"
    )
    done = _lint(luacheck, out, "typo.lua")
    assert done.returncode == 1, done.stdout
    assert "accessing undefined variable 'playres'" in done.stdout
    assert "accessing undefined field 'onn' of global 'events'" in done.stdout
    assert "TICKK" in done.stdout
