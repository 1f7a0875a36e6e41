"""Review of the reused poll coroutine, through a script: what a poll can
leave behind for the next poll, an event handler or on_stop."""

from __future__ import annotations

from typing import Any

STASH = """
n = 0
local function try(where, f)
  local ok, err = pcall(f, saved)
  if not ok and tostring(err):find("lifecycle coroutine", 1, true) then
    shared:int(where):add(1)
  else
    shared:int("allowed"):add(1)
  end
end
local function attack(where)
  try(where, coroutine.resume)
  try(where, coroutine.close)
end
function poll()
  n = n + 1
  if n == 1 then
    saved = coroutine.running()
    -- A handler the main engine runs (chunk-level ones run in the event engine).
    events:on("e", function() attack("event") end)
  else
    attack("poll")
  end
  shared:int("polls"):set(n)
  return 100
end
function on_stop() attack("stop") end
"""


def test_a_stashed_poll_coroutine_cannot_be_resumed_or_closed(stepped: Any) -> None:
    h = stepped.script(STASH)
    h.start()
    stepped.advance(0.5)
    stepped.rt.bus.emit("e", {})
    stepped.advance(0.5)
    h.stop()
    assert h.status == "stopped" and h.poll_errors == 0
    polls = h.shared.int("polls").get()
    assert polls >= 9
    # Refused from every later poll, the event handler and on_stop.
    counts = {k: h.shared.int(k).get() for k in ("poll", "event", "stop", "allowed")}
    assert counts == {"poll": 2 * (polls - 1), "event": 2, "stop": 2, "allowed": 0}


MANY = """
local t = {}
for i = 1, 600000 do t[i] = true end
function on_start() return table.unpack(t) end
function poll() t = nil shared:int("polls"):add(1) return 100 end
"""


def test_on_start_returning_many_values_starts(stepped: Any) -> None:
    # Its values went through varargs on the host thread's stack, each pass
    # a copy of all of them: "?:-1: stack overflow", and the script failed.
    h = stepped.script(MANY)
    h.start()
    stepped.advance(0.3)
    assert h.status == "running", stepped.messages("error")
    assert h.shared.int("polls").get() >= 3
