"""Cross-process delivery through the Redis event stream, with real OS processes.

Each worker process builds a ``Runtime`` on the same Redis URL and prefix
(which attaches it to the stream), says ``ready``, waits for ``go`` on stdin,
emits its events and then waits until its subscriber has seen everything it
expects; it prints what it saw as JSON. Keys live under a unique prefix,
deleted afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SRC = Path(__file__).resolve().parents[2] / "src"

EMITTER = """
import json, sys, threading, time
from moonbus import Runtime

url, name, count, expect = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
seen = []
lock = threading.Lock()
enough = threading.Event()

def record(event):
    with lock:
        seen.append([event.seq, event.type, event.source, event.data["n"]])
        if len(seen) >= expect:
            enough.set()

with Runtime(events=url, threaded=False) as rt:
    rt.bus.on("*", record)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    for n in range(count):
        rt.bus.emit("ping", {"n": n}, source=name)
    enough.wait(60)
    time.sleep(0.3)  # anything more (a duplicate) would arrive now
    with lock:
        print(json.dumps(seen), flush=True)
"""

LUA_COUNTER = """
local last = 0
events:on("ping", function(e)
  if e.seq <= last then shared:int("disorder"):increment() end
  last = e.seq
  shared:int("pings"):increment()
  shared:int("sum"):add(e.n)
end)
"""

SCRIPTED = """
import json, sys, time
from moonbus import Runtime

url, script = sys.argv[1], sys.argv[2]
with Runtime(events=url, threaded=False) as rt:
    host = rt.load(script)
    host.start()
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while host.shared.int("pings").get() < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # anything more (a duplicate) would arrive now
    print(json.dumps(host.shared.dump()), flush=True)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"worker did not start: {line!r}\n{err}")


def _result(process: subprocess.Popen[str]) -> Any:
    out, err = process.communicate(timeout=110)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_emitting_5000_each_see_the_same_10000_in_order() -> None:
    redis_or_skip()
    prefix = unique_prefix()
    url = f"{REDIS_URL}?prefix={prefix}"
    try:
        workers = [_spawn(EMITTER, url, name, "5000", "10000") for name in ("A", "B")]
        for worker in workers:
            _ready(worker)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        logs = [_result(worker) for worker in workers]
        assert len(logs[0]) == 10_000
        assert logs[0] == logs[1]  # the same events, in the same order
        seqs = [entry[0] for entry in logs[0]]
        assert seqs == list(range(seqs[0], seqs[0] + 10_000))  # no gap
        for name in ("A", "B"):  # each emitter's own order is kept
            assert [e[3] for e in logs[0] if e[2] == name] == list(range(5000))
        sources = [entry[2] for entry in logs[0]]
        switches = sum(a != b for a, b in itertools.pairwise(sources))
        assert switches > 1  # the two really emitted at the same time
    finally:
        delete_prefix(prefix)


def test_a_lua_script_counts_the_events_of_another_process_exactly_once(tmp_path: Path) -> None:
    redis_or_skip()
    prefix = unique_prefix()
    url = f"{REDIS_URL}?prefix={prefix}"
    script = tmp_path / "counter.lua"
    script.write_text(LUA_COUNTER, encoding="utf-8")
    try:
        counter = _spawn(SCRIPTED, url, str(script))
        _ready(counter)
        emitter = _spawn(EMITTER, url, "A", "1000", "1000")
        _ready(emitter)
        assert emitter.stdin is not None
        emitter.stdin.write("go\n")
        emitter.stdin.flush()
        sent = _result(emitter)
        assert [e[3] for e in sent] == list(range(1000))
        shared = _result(counter)
        assert shared == {"pings": 1000, "sum": sum(range(1000))}  # no "disorder" key
    finally:
        delete_prefix(prefix)
