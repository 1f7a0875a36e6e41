"""Review 3 of the host-call room check (host_bridge.lua's refusal of a host
call within lua_room.MARGIN of the memory limit): memory exhaustion around
host calls on paths that do not go through that check.

Each case runs in a subprocess with a timeout: the failures found were a
process abort (Lua's panic, an unprotected allocation outside any Lua call)
and a hang (an unprotected allocation inside a host call, which jumps past
lupa's release of the GIL).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# A script source larger than the script's free Lua memory but well under
# max_source_bytes (4 MiB): lupa pushed it as an argument of the compile,
# unprotected, before any check. At the top level (Runtime.load) that was
# Lua's panic (process abort); inside `require` a hang on the GIL; in a
# runner job with a small `memory` budget, the worker thread's abort.
BIG = '''
import json, sys
from pathlib import Path
from moonbus.runtime import Runtime
native = sys.argv[1] == "native"
where = Path(sys.argv[2])
mode = sys.argv[3]
pad = "-- " + "x" * 200 + "\\n"
big = pad * (2_500_000 // len(pad)) + "return 1\\n"
if mode == "runner":
    from moonbus.runner import Runner
    from moonbus.lua.sandbox import SandboxFactory
    runner = Runner(workers=1, factory=SandboxFactory(native=native))
    error = runner.submit(big, memory=1 << 20).exception(timeout=20)
    print(type(error).__name__)
    assert runner.submit("return 1 + 1", memory=1 << 20).result(timeout=20) == 2
    runner.close()
    print("done")
    raise SystemExit
rt = Runtime(threaded=False, clock=lambda: 0.0, native=native)
rt.settings.memory_limit = 1 << 20
rt.settings.handler_timeout = 60
if mode == "top":
    path = where / "bigtop.lua"
    path.write_text(big)
    try:
        rt.load(path).start()
    except Exception as exc:
        print(type(exc).__name__)
else:
    folder = where / "pkg"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"name": "pkg", "main": "main.lua"}))
    (folder / "main.lua").write_text(
        'local ok, e = pcall(require, "big")\\n'
        'shared:string("out"):set(tostring(ok) .. " " .. tostring(e))\\n')
    (folder / "big.lua").write_text(big)
    h = rt.load(folder)
    h.start()
    print(h.shared.string("out").get())
rt.close()
print("done")
'''


@pytest.mark.parametrize("mode", ["top", "require", "runner"])
@pytest.mark.parametrize("native", [True, False])
def test_a_source_larger_than_the_free_memory_is_refused_not_pushed(
        tmp_path: Path, native: bool, mode: str) -> None:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", BIG, "native" if native else "python", str(tmp_path), mode],
            env=env, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the host hung (deadlock on the GIL)")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split()
    assert lines[-1] == "done"
    if mode == "require":
        assert "false" in done.stdout and "memory" in done.stdout
    else:
        assert "ScriptMemoryError" in done.stdout
