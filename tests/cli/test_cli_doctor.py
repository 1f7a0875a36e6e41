"""``moonbus doctor`` and ``moonbus --version``, in-process and as a real program.

The broken cases are made real where it is cheap: a copy of the package
without one of its Lua files (what a wheel without package data looked like),
C extensions blocked by an import hook (what an install without a compiler
gives), a missing redis package (``sys.modules["redis"] = None``), a Redis
URL where nothing listens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import moonbus
from moonbus.cli import cli
from moonbus.cli.diagnosis import REDIS_URL_ENV

PACKAGE = Path(moonbus.__file__).resolve().parent
NOWHERE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
CORE = ("python", "moonbus", "lupa", "core", "time limits")
FAST_PATHS = ("bus emit", "delivery gate", "event delivery into Lua", "deferred event queue",
              "shared int ops from Lua", "host data into Lua")
VERSION = re.compile(r"^moonbus \d+\.\d+\.\d+\S* \(lupa \d+\.\d+\S*, Lua 5\.4\)$")


@pytest.fixture(autouse=True)
def _no_configured_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)


def _doctor(*args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["doctor", "--json", *args], catch_exceptions=False)
    return result.exit_code, {f["name"]: f for f in json.loads(result.output)}


def test_version_names_moonbus_lupa_and_lua() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert VERSION.match(result.output.strip()), result.output


def test_a_working_install_is_ok_whatever_the_unconfigured_redis_does() -> None:
    code, found = _doctor("--timeout", "0.5")
    assert code == 0
    for name in CORE:
        assert found[name]["status"] == "ok" and found[name]["required"], found[name]
    assert "handled an event" in found["core"]["detail"]
    assert "runaway loop was stopped" in found["time limits"]["detail"]
    assert not found["redis"]["required"]
    assert {f"fast path: {name}" for name in FAST_PATHS} <= set(found)


def test_the_text_report_ends_with_the_verdict() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--timeout", "0.5"], catch_exceptions=False)
    lines = result.output.splitlines()
    assert VERSION.match(lines[0])
    assert re.search(r"^core\s+ok\s+a script started", result.output, re.MULTILINE)
    assert lines[-1].startswith("moonbus doctor: ok")


def test_a_configured_redis_that_does_not_answer_is_an_error() -> None:
    code, found = _doctor("--redis", NOWHERE, "--timeout", "0.5")
    assert code == 1
    redis = found["redis"]
    assert redis["status"] == "unreachable" and redis["broken"]
    assert "hunter2" not in redis["detail"] and "127.0.0.1:1" in redis["detail"]


def test_the_environment_configures_redis_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, NOWHERE)
    result = CliRunner().invoke(cli, ["doctor", "--timeout", "0.5"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "moonbus doctor: broken: redis" in result.output


def test_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    code, found = _doctor()
    assert code == 0
    assert found["redis"]["status"] == "missing"
    assert found["redis"]["detail"].startswith("redis package not installed")
    code, found = _doctor("--redis", "redis://127.0.0.1:6379/0")
    assert code == 1 and found["redis"]["broken"]


def test_pure_python_switch_is_named_as_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    code, found = _doctor("--timeout", "0.5")
    assert code == 0
    for name in ("bus emit", "event delivery into Lua", "deferred event queue",
                 "shared int ops from Lua", "host data into Lua"):
        finding = found[f"fast path: {name}"]
        assert (finding["status"], finding["detail"]) == ("off", "MOONBUS_PURE_PYTHON=1")
        assert not finding["required"]


def test_without_lua_54_the_install_is_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lupa.lua54", None)
    code, found = _doctor("--timeout", "0.5")
    assert code == 1
    assert found["lupa"]["status"] == "FAILED" and "no Lua 5.4" in found["lupa"]["detail"]
    assert "core" not in found  # nothing to run it on; the lupa line says why
    version = CliRunner().invoke(cli, ["--version"])
    assert version.exit_code == 0 and "no Lua 5.4" in version.output


def _program(code: str, *args: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (REDIS_URL_ENV, "MOONBUS_PURE_PYTHON")}
    env["PYTHONPATH"] = str(path)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=path, capture_output=True,
        text=True, timeout=60, check=False,
    )


_MAIN = "import sys; from moonbus.cli import main; sys.argv[0] = 'moonbus'; main()"
# An install without a C compiler: every moonbus C extension fails to import.
_NO_C = """
import importlib.abc, sys
class NoC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("moonbus.") and name.rpartition(".")[2].startswith("_fast"):
            raise ImportError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, NoC())
""" + _MAIN


def test_a_program_without_c_extensions_says_each_is_not_built(tmp_path: Path) -> None:
    done = _program(_NO_C, "doctor", "--json", "--timeout", "0.5", path=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    found = {f["name"]: f for f in json.loads(done.stdout)}
    for name in FAST_PATHS:
        finding = found[f"fast path: {name}"]
        assert finding["status"] == "off", finding
        assert " not importable: No module named 'moonbus." in finding["detail"]
    assert found["core"]["status"] == "ok"


def test_a_package_missing_a_lua_file_fails_the_core(tmp_path: Path) -> None:
    copy = tmp_path / "site" / "moonbus"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "host" / "script_env.lua").unlink()
    done = _program(_MAIN, "doctor", "--timeout", "0.5", path=copy.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^core\s+FAILED\s+FileNotFoundError: .*script_env\.lua", done.stdout,
                     re.MULTILINE), done.stdout
    assert "moonbus doctor: broken: core" in done.stdout
    version = _program(_MAIN, "--version", path=copy.parent)
    assert VERSION.match(version.stdout.strip()), version.stdout + version.stderr
