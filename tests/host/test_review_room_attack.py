"""Review 3 of the host-call room check (host_bridge.lua's refusal of a host
call within lua_room.MARGIN of the memory limit): memory exhaustion around
host calls on paths that do not go through that check.

Each case runs in a subprocess with a timeout: the failures found were a
process abort (Lua's panic, an unprotected allocation outside any Lua call)
and a hang (an unprotected allocation inside a host call, which jumps past
lupa's release of the GIL).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.child_process import run_child

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
    done = run_child(BIG, "native" if native else "python", str(tmp_path), mode, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split()
    assert lines[-1] == "done"
    if mode == "require":
        assert "false" in done.stdout and "memory" in done.stdout
    else:
        assert "ScriptMemoryError" in done.stdout


# stats.get returned the stored value straight to lupa: a string up to
# max_stats_value (an operator setting, up to 1 GiB) was pushed unmeasured,
# so with max_stats_value above the 16 KiB room a host call keeps, a script
# that stored a long value, used its memory up to the room and read it back
# hung the thread on the GIL. Now it goes through to_lua (lua_room): refused
# with a catchable error.
STATS = '''
import sys
from pathlib import Path
from moonbus.runtime import Runtime
LUA = """
local rep = string.rep
local keep, s
local function add() keep = {keep, rep("x", s)} end
events:on("go", function(e)
  stats.set("k", rep("a", 60000))
  for j = 0, 40 do
    local spacer = rep("y", 16 * 1024 + 64 * j)
    keep = nil
    s = 1 << 16
    while s >= 1 do
      if not pcall(add) then s = s // 2 end
    end
    spacer = nil
    collectgarbage()
    pcall(stats.get, "k")
    keep = nil
    collectgarbage()
  end
  local value = stats.get("k")
  shared:string("out"):set(#value == 60000 and "done" or "wrong")
end)
"""
rt = Runtime(threaded=False, clock=lambda: 0.0, native=sys.argv[1] == "native")
rt.settings.memory_limit = 1 << 20
rt.settings.max_stats_value = 64 * 1024
rt.settings.handler_timeout = 60
path = Path(sys.argv[2]) / "stats.lua"
path.write_text(LUA)
h = rt.load(path)
h.start()
rt.bus.emit("go")
print(h.errors[:2])
print(h.shared.string("out").get())
rt.close()
'''


@pytest.mark.parametrize("native", [True, False])
def test_a_long_stats_value_read_near_the_limit_does_not_hang(tmp_path: Path,
                                                              native: bool) -> None:
    done = run_child(STATS, "native" if native else "python", str(tmp_path), timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "done", done.stdout
