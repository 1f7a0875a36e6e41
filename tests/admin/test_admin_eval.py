"""``script.eval``: Lua in a running script, off unless enabled, limited, audited.

Each test runs on the C delivery path and on the Python path (the chunk reads
what an event handler changed). Runtimes are threaded: the script is live
while the admin command runs, as in ``moonbus serve``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.native_paths import both_paths

from moonbus.admin.rcon_client import RconClient
from moonbus.admin.rcon_server import RconServer
from moonbus.errors import AdminError, ConfigError
from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.lua.fastcall import native_available
from moonbus.runtime import LogLine, Runtime

delivery_path = both_paths(native_available())

SCRIPT = """
greeting = "hello"
pings = 0
events.on("ping", function(e) pings = pings + 1 end)
function poll() return 50 end
"""

Start = Callable[..., tuple[Runtime, ScriptHost, list[LogLine]]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    runtimes: list[Runtime] = []

    def make(**settings: object) -> tuple[Runtime, ScriptHost, list[LogLine]]:
        rt = Runtime(threaded=True, workers=2, settings=HostSettings(**settings))  # type: ignore[arg-type]
        runtimes.append(rt)
        logs: list[LogLine] = []
        rt.add_log_sink(logs.append)
        path = tmp_path / "bot.lua"
        path.write_text(SCRIPT)
        host = rt.load(path)
        host.start()
        return rt, host, logs

    yield make
    for rt in runtimes:
        rt.close()


def test_off_by_default_says_how_to_enable(start: Start,
                                           caplog: pytest.LogCaptureFixture) -> None:
    rt, host, _ = start()
    with caplog.at_level(logging.WARNING, logger="moonbus.admin"):
        answer = rt.admin.answer("script.eval bot return greeting")
    assert answer.startswith("error: script.eval is disabled")
    assert "admin_eval=True" in answer and "--admin-eval" in answer
    assert "refused (disabled) for script 'bot': return greeting" in caplog.text
    # settings.set cannot turn it on: the choice is made when the host starts.
    assert "unknown setting 'admin_eval'" in rt.admin.answer("settings.set admin_eval true")
    assert host.status == "running"


def test_the_setting_is_a_flag() -> None:
    with pytest.raises(ConfigError, match="admin_eval must be true or false, got 'yes'"):
        HostSettings(admin_eval="yes")  # type: ignore[arg-type]


def test_evaluates_in_the_running_script_and_is_audited(
        start: Start, caplog: pytest.LogCaptureFixture) -> None:
    rt, _, logs = start(admin_eval=True)
    with caplog.at_level(logging.WARNING, logger="moonbus.admin"):
        assert rt.admin.run("script.eval bot return greeting, pings") == "hello\t0"
    assert "script.eval in script 'bot': return greeting, pings" in caplog.text
    audit = [x for x in logs if x.msg == "admin script.eval: return greeting, pings"]
    assert audit and audit[0].level == "warn" and audit[0].script == "bot"
    rt.bus.emit("ping", {})
    assert rt.admin.run(["script.eval", "bot", "pings"]) == "1"  # an expression, no return
    assert rt.admin.run("script.eval bot 'return {2, a = 1, s = \"x\"}'") == '{2, a = 1, s = "x"}'
    # The line is split shell-like: a chunk with quotes of its own is quoted whole.
    assert rt.admin.run("script.eval bot \"greeting = 'changed'\"") == "(no value)"
    assert rt.admin.run("script.eval bot greeting") == "changed"
    with pytest.raises(AdminError, match="no script named 'nobody'"):
        rt.admin.run("script.eval nobody 1")


def test_an_endless_chunk_is_cut_and_the_script_goes_on(start: Start) -> None:
    rt, host, _ = start(admin_eval=True, handler_timeout=0.2)
    began = time.monotonic()
    with pytest.raises(AdminError, match="script 'bot': eval"):
        rt.admin.run("script.eval bot 'while true do end'")
    assert time.monotonic() - began < 10.0
    assert host.status == "running"
    rt.bus.emit("ping", {})
    assert rt.admin.run("script.eval bot pings") == "1"  # its handlers still run


def test_no_python_no_files(start: Start) -> None:
    rt, _, _ = start(admin_eval=True)
    assert rt.admin.run("script.eval bot io, debug, package, python, dofile, loadfile") == \
        "nil\tnil\tnil\tnil\tnil\tnil"
    with pytest.raises(AdminError, match="attempt to index a nil value"):
        rt.admin.run("script.eval bot 'io.open(\"/etc/passwd\")'")
    assert rt.admin.run("script.eval bot 'os.execute, os.remove, os.getenv'") == "nil\tnil\tnil"
    answer = rt.admin.answer("script.eval bot 'return python.eval(\"1\")'")
    assert answer.startswith("error: script.eval: script 'bot': eval")


def test_over_rcon(start: Start) -> None:
    rt, _, logs = start(admin_eval=True)
    server = RconServer(rt.admin.answer, password="pw", port=0)
    server.start()
    try:
        with RconClient("127.0.0.1", server.port, "pw") as client:
            assert client.command("script.eval bot 'return greeting .. \"!\"'") == "hello!"
            assert client.command("script.eval bot 'while true do end'").startswith("error: ")
    finally:
        server.stop()
    assert any(x.msg == 'admin script.eval: return greeting .. "!"' for x in logs)
