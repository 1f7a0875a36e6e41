"""ScriptChecker: its picture of the script globals matches a real script engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result

from moonbus.app import api_names_of, load_app
from moonbus.cli.script_check import MOONBUS_GLOBALS, Problem, ScriptChecker, script_files
from moonbus.host.source import load_source
from moonbus.lua.sandbox import SandboxFactory

Run = Callable[..., tuple[Result, Any]]
Lua = Callable[[str, str], Path]

LIST_GLOBALS = """
function on_start()
  local names = {}
  for k in pairs(_G) do names[#names + 1] = k end
  table.sort(names)
  shared:string("globals"):set(table.concat(names, ","))
end
"""


def test_known_globals_match_a_running_script(summary_of: Run, lua: Lua) -> None:
    script = lua("globals.lua", LIST_GLOBALS)
    result, summary = summary_of(script, "--ticks", "0", "--tick-ms", "0")
    assert result.exit_code == 0
    seen = set(summary["scripts"]["globals"]["shared"]["globals"].split(","))
    with SandboxFactory(memory_limit=None) as factory:
        engine = factory.create("t", memory_limit=None)
        try:
            sandbox = {str(k) for k in engine.new_env()}
        finally:
            engine.close()
    expected = sandbox | set(MOONBUS_GLOBALS) | set(api_names_of(load_app(None))) | {"on_start"}
    assert seen == expected


def test_problem_text() -> None:
    assert str(Problem("a.lua:3", "boom")) == "a.lua:3: boom"
    assert str(Problem("a.lua:3", "hmm", "warning")) == "a.lua:3: warning: hmm"
    assert str(Problem(None, "script not found: x")) == "script not found: x"


def test_script_files_of_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "bot"
    (folder / "sub").mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "main.lua").write_text("return 1")
    (folder / "util.lua").write_text("return 2")
    (folder / "sub" / "deep.lua").write_text("return 3")
    (folder / "notes.txt").write_text("not lua")
    files = script_files(load_source(folder), "bot")
    assert [(f.display, f.chunkname, f.is_main) for f in files] == [
        ("bot/main.lua", "bot/main.lua", True),
        ("bot/sub/deep.lua", "bot/sub/deep.lua", False),
        ("bot/util.lua", "bot/util.lua", False),
    ]


def test_compile_reports_the_users_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 80)
    deep.mkdir()
    script = deep / "broken.lua"
    script.write_text("local = 1\n")
    with SandboxFactory(memory_limit=None) as factory, ScriptChecker(factory) as checker:
        problems = checker.compile(load_source(script), str(script))
        assert [str(p) for p in problems] == [f"{script}:1: <name> expected near '='"]
        assert checker.compile(load_source(script), "short.lua")[0].where == "short.lua:1"
