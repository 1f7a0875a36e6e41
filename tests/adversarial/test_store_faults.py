"""Store faults (issue "Containment" 13-18): Redis going away, restarting empty,
answering LOADING/BUSY; a full disk; two writers on one SQLite file; a
read-only file. Every server, process and mount a test starts is stopped in a
``finally`` (see ``support_store_faults``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.adversarial.support_store_faults import own_redis, serve, stop

POLL_EMITTER = """
function poll()
  local ok, err = pcall(events.emit, "out", {n = 1})
  if not ok then stats.set("last_error", tostring(err)) end
  return 50
end
"""


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -------------------------------------------------------------- 13: segfault
@pytest.mark.redis
def test_serve_exits_cleanly_after_script_emits_failed_on_a_lost_redis(tmp_path: Path) -> None:
    """A script's events.emit failing (Redis away past the retry window) used to
    leave the error holding Lua values of a dead coroutine: the process then
    crashed (SIGSEGV) at its next garbage collection, i.e. on SIGTERM."""
    script = tmp_path / "emitter.lua"
    script.write_text(POLL_EMITTER)
    log = tmp_path / "serve.log"
    with own_redis(tmp_path, persist=False) as server:
        url = f"{server.url}?retry_timeout=0.2"
        with serve([str(script), "--tick-ms", "5000", "--events", url], log) as proc:
            client = server.client()
            assert _wait_for(lambda: client.exists("moonbus:%events:stream")), log.read_text()
            server.kill()
            time.sleep(1.0)  # several emits fail after their retry window
            server.start()
            time.sleep(0.5)
            assert stop(proc) == 0, log.read_text()
