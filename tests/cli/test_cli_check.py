"""``moonbus check``: compile and lint without running."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Lua = Callable[[str, str], Path]


def test_clean_script_exits_0(moonbus: Any, lua: Lua) -> None:
    script = lua("ok.lua", "local n = 0\nfunction poll() n = n + 1 return 600 end\n")
    result = moonbus("check", script)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "checked 1 script: 0 errors, 0 warnings\n"


def test_syntax_errors_exit_2_with_file_line(moonbus: Any, lua: Lua) -> None:
    good = lua("good.lua", "function poll() end\n")
    bad = lua("bad.lua", "\n\nfunction poll()\n  if x then\nend\n")
    result = moonbus("check", good, bad, "-q")
    assert result.exit_code == 2
    assert result.stdout == f"{bad}:6: 'end' expected (to close 'function' at line 3) near <eof>\n"
    assert result.stderr == ""


def test_warnings_exit_0_or_1_with_strict(moonbus: Any, lua: Lua) -> None:
    script = lua("warn.lua", "function poll()\n  count = 1\n  loger.info('x')\nend\n")
    result = moonbus("check", script)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{script}:2: warning: assignment to global 'count': make it local (each engine has "
        "its own globals; use shared values to share state)",
        f"{script}:3: warning: unknown global 'loger' (not a Lua, moonbus or game global, "
        "never assigned)",
    ]
    assert "0 errors, 2 warnings" in result.stderr
    assert moonbus("check", script, "--strict").exit_code == 1
    assert moonbus("check", script, "--no-lint").stdout == ""


def test_missing_file_and_bad_manifest(moonbus: Any, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"options": [1,\n')
    (folder / "main.lua").write_text("")
    result = moonbus("check", "nope.lua", folder)
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0] == "script not found: nope.lua"
    assert lines[1].startswith(f"{folder / 'manifest.json'}:2: invalid JSON")


def test_folder_modules_are_checked_and_share_globals(moonbus: Any, tmp_path: Path) -> None:
    folder = tmp_path / "bot"
    (folder / "lib").mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "main.lua").write_text('local m = require("lib.moves")\nfunction poll() '
                                     "return helper() end\n")
    (folder / "lib" / "moves.lua").write_text("function helper() return 600 end\n"
                                              "return {}\n")
    result = moonbus("check", "bot", "-q")
    assert result.exit_code == 0
    # The module's global is visible in main.lua (no "unknown global"), but is
    # still reported where it is assigned.
    assert result.stdout == (
        "bot/lib/moves.lua:1: warning: assignment to global 'helper': make it local (each "
        "engine has its own globals; use shared values to share state)\n"
    )
    (folder / "lib" / "moves.lua").write_text("return {\n")
    broken = moonbus("check", "bot", "-q")
    assert broken.exit_code == 2
    assert broken.stdout.startswith("bot/lib/moves.lua:2: ")


def test_require_outside_a_folder_script(moonbus: Any, lua: Lua) -> None:
    script = lua("req.lua", 'local m = require("x")\n')
    result = moonbus("check", script, "-q")
    assert result.stdout == (
        f"{script}:1: warning: 'require' is only available in folder scripts "
        "(a folder with manifest.json)\n"
    )


def test_examples_are_clean(moonbus: Any, examples: Path) -> None:
    # The demo world's examples: single files and script folders (examples/grid/
    # holds the grid game's scripts: see test_cli_app).
    paths = sorted(p for p in examples.iterdir()
                   if p.suffix == ".lua" or (p / "main.lua").is_file())
    assert len(paths) >= 5
    result = moonbus("check", *paths)
    assert result.exit_code == 0, result.stdout
    assert result.stdout == ""
