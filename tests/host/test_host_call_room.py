"""A host call is refused before Python runs when the script's Lua memory is
nearly full (host_bridge.lua's room check), with Lua's own out-of-memory
message, which the script can catch; once memory is free again the same
call works. Why: what lupa pushes when Python returns is allocated outside
any protected call, and a refused allocation there used to hang the thread
on the GIL (tests/host/test_review_hotpath_attack.py has the hang itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moonbus.lua.lua_room import MARGIN
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runtime import Runtime

# timed handlers and priced deliveries (conftest): no collector pass mid-test
pytestmark = pytest.mark.usefixtures("quiet_collector")

FULL = """
local s = shared:string("s")
s:set("hello")
events:on("go", function(e)
  local hog, n = {}, 0
  -- fill until the limit refuses, then free a little less than the margin
  pcall(function() while true do n = n + 1; hog[n] = {} end end)
  for i = 1, 40 do hog[n - i] = nil end
  collectgarbage()
  local ok, err = pcall(s.get, s)
  local r1 = tostring(ok) .. " " .. tostring(err)
  hog = nil
  collectgarbage()
  local r2 = s:get()
  shared:string("out"):set(r1 .. " | " .. r2)
end)
"""


@pytest.mark.parametrize("native", [True, False])
def test_a_host_call_with_no_room_left_is_refused_and_works_again_later(
        tmp_path: Path, native: bool) -> None:
    rt = Runtime(threaded=False, clock=lambda: 0.0, native=native)
    try:
        rt.settings.memory_limit = 1 << 20
        path = tmp_path / "full.lua"
        path.write_text(FULL, encoding="utf-8")
        h = rt.load(path)
        h.start()
        rt.bus.emit("go")
        assert h.errors == []
        assert h.shared.string("out").get() == "false not enough memory | hello"
    finally:
        rt.close()


def test_the_room_follows_the_engines_memory_limit() -> None:
    with SandboxFactory() as factory:
        engine = factory.create("room", memory_limit=1 << 20)
        room = engine._room  # host_bridge.lua's table: what host_function compares with
        total = engine._rt.get_max_memory(total=True)
        assert room["limit"] == (total - MARGIN) / 1024
        engine.set_memory_limit(4 << 20)
        assert room["limit"] == ((4 << 20) - MARGIN) / 1024
        engine.set_memory_budget(1 << 20)
        assert room["limit"] == (engine._rt.get_max_memory(total=True) - MARGIN) / 1024
        engine.set_memory_limit(None)
        assert room["limit"] == float("inf")
        engine.close()
