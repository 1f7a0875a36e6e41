"""``moonbus run --watch``: a script is reloaded when its file changes.

The end-to-end test runs the real program in a child process, edits the
script and reads the ``--log-json`` file; every wait is bounded and the
process is killed at the end whatever happened. The folder test drives a
``ScriptWatcher`` directly on a stepped session with a hand-moved clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli.conftest import Invoke
from tests.cli.test_cli_process import _env

from moonbus.cli.watch import ScriptWatcher
from moonbus.session.plan import plan_scripts
from moonbus.session.session import Session

WAIT = 20.0  # generous: the machine is shared


def _write(path: Path, text: str) -> None:
    """As an editor saves: a new file moved into place."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _lines(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(x) for x in log.read_text("utf-8").splitlines() if x.endswith("}")]


def _wait_for(log: Path, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        lines = _lines(log)
        if any(pred(line) for line in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"not seen within {WAIT} s; log: {_lines(log)}")


def _has(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: text in line["msg"]


def _script(version: str) -> str:
    return (
        "function on_start()\n"
        '  local n = shared:int("loads"):increment()\n'
        f'  logger.info("{version} started, load " .. n)\n'
        "end\n"
        f'function on_stop() logger.info("{version} stopping") end\n'
        "function poll() return 100 end\n"
    )


def test_watch_reloads_keeps_shared_and_survives_a_syntax_error(tmp_path: Path) -> None:
    script = tmp_path / "w.lua"
    log = tmp_path / "log.ndjson"
    _write(script, _script("v1"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "moonbus", "run", "--watch", "w.lua", "--tick-ms", "50",
         "-q", "--log-json", "log.ndjson", "--summary", "out.json"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(log, _has("v1 started, load 1"))
        _write(script, _script("version2"))
        _wait_for(log, _has("version2 started, load 2"))  # shared value kept
        _write(script, "function on_start(\n  logger.info('broken')\n")
        _wait_for(log, _has("watch: not reloaded"))
        _write(script, _script("version_three"))
        lines = _wait_for(log, _has("version_three started, load 3"))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    messages = [line["msg"] for line in lines]
    refused = next(m for m in messages if "not reloaded" in m)
    assert refused.startswith("watch: not reloaded: w.lua:2: ")
    assert refused.endswith("the running version is kept")
    # The old version ran on through the syntax error: stopped only for the fix.
    assert messages.index("version2 stopping") > messages.index(refused)
    assert "broken" not in messages
    summary = json.loads((tmp_path / "out.json").read_text("utf-8"))
    assert summary["scripts"]["w"]["status"] == "running"
    assert summary["scripts"]["w"]["shared"]["loads"] == 3


def test_watch_needs_real_time(moonbus: Invoke, lua: Callable[[str, str], Path]) -> None:
    path = lua("a.lua", "function poll() return 600 end\n")
    result = moonbus("run", "--watch", path, "--tick-ms", "0", "--ticks", "3")
    assert result.exit_code == 2
    assert "--watch needs real time" in result.output


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_folder_script_reloads_when_a_module_changes(tmp_path: Path) -> None:
    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "bot"}')
    (folder / "main.lua").write_text(
        'local m = require("greet")\n'
        'function on_start() logger.info(m.text) end\n'
    )
    module = folder / "greet.lua"
    module.write_text('return {text = "hello"}\n')
    plans = plan_scripts([str(folder)], [])
    session = Session(plans, seed=0, virtual=True)
    seen: list[str] = []
    session.add_log_sink(lambda line: seen.append(line.msg))
    clock = _Clock()
    try:
        session.start()
        watcher = ScriptWatcher(session, plans, clock=clock)

        def look() -> None:  # two looks: a change is taken once it has settled
            for _ in range(2):
                clock.now += 1.0
                watcher.check()
            session.runtime.run_due()

        module.write_text('return {text = "hello again, world"}\n')
        look()
        assert watcher.reloads == 1
        assert "hello again, world" in seen
        module.write_text('return {text = "oops"\n')  # a syntax error in a module
        look()
        assert watcher.refused == 1
        assert any(m.startswith(f"watch: not reloaded: {folder / 'greet.lua'}:2:")
                   for m in seen), seen
        assert session.hosts[0].status == "running"
    finally:
        session.close()


def test_a_failed_script_is_started_again_by_its_fix(tmp_path: Path) -> None:
    script = tmp_path / "bad.lua"
    script.write_text('error("boom at load")\n')
    plans = plan_scripts([str(script)], [])
    session = Session(plans, seed=0, virtual=True)
    seen: list[str] = []
    session.add_log_sink(lambda line: seen.append(line.msg))
    clock = _Clock()
    try:
        session.start()
        host = session.hosts[0]
        assert host.status == "failed"
        watcher = ScriptWatcher(session, plans, clock=clock)
        script.write_text('function on_start() logger.info("fixed and running") end\n')
        for _ in range(2):
            clock.now += 1.0
            watcher.check()
        session.runtime.run_due()
        assert host.status == "running"
        assert "fixed and running" in seen
        assert f"watch: reloaded {script}" in seen
    finally:
        session.close()
