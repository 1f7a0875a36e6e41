"""Two ``moonbus run`` processes sharing one Redis (``--shared`` and ``--events``).

Each process runs the same Lua script, which increments one shared int 10,000
times from its ``poll`` (100 per poll, one poll per tick in virtual time):
the total must be exactly 20,000, whatever the interleaving. Every key lives
under a unique prefix, deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

import moonbus
from moonbus.shared import SharedStore
from moonbus.store.redis_backend import RedisEventStore

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SRC = Path(moonbus.__file__).resolve().parents[1]

COUNTER = """
local done = 0
function poll()
  if done < 10000 then
    local hits = shared:int("hits")
    for _ = 1, 100 do hits:increment() end
    done = done + 100
  end
  return 600
end
"""


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), path) if p)}


def test_two_processes_increment_one_shared_int_through_lua_exactly(tmp_path: Path) -> None:
    redis_or_skip()
    prefix = unique_prefix()
    (tmp_path / "counter.lua").write_text(COUNTER, encoding="utf-8")
    shared = f"{REDIS_URL}?prefix={prefix}"
    events = f"{REDIS_URL}?prefix={prefix}"
    try:
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "moonbus", "run", "counter.lua", "--ticks", "150",
                 "--tick-ms", "0", "--seed", str(seed), "--shared", shared, "--events", events,
                 "--summary", f"summary{seed}.json", "-q"],
                cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for seed in (1, 2)
        ]
        for run in runs:
            _, err = run.communicate(timeout=110)
            assert run.returncode == 0, err.decode()
        with SharedStore.from_url(REDIS_URL, prefix=prefix) as store:
            assert store.namespace("counter").int("hits").get() == 20_000
        summaries = [json.loads((tmp_path / f"summary{s}.json").read_text()) for s in (1, 2)]
        assert [s["scripts"]["counter"]["status"] for s in summaries] == ["running", "running"]
        with RedisEventStore(REDIS_URL, prefix=prefix) as store:
            stored = store.query()
            # both worlds' events, in one global order without a gap
            assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
            ticks = [e for e in stored if e.type == "tick"]
            assert len(ticks) == 300
        listed = subprocess.run(
            [sys.executable, "-m", "moonbus", "events", "--db", events, "--type", "tick",
             "--limit", "4", "--format", "json"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == [e.to_dict() for e in ticks[-4:]]
    finally:
        delete_prefix(prefix)
