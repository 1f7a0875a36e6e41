-- Steers the rover to the nearest gem, one step a tick, whatever the tick length:
-- it decides in a `tick` handler (event engine), not in poll.
--   moonbus run --app examples.grid_game:app examples/grid/collector.lua --tick-ms 0 --ticks 100
local dirs = { "north", "east", "south", "west" }
local detours = 0

local function step_towards(tx, ty)
  local x, y = rover:position()
  local wanted = {}
  if tx > x then wanted[#wanted + 1] = "east" elseif tx < x then wanted[#wanted + 1] = "west" end
  if ty > y then wanted[#wanted + 1] = "south" elseif ty < y then wanted[#wanted + 1] = "north" end
  for _, d in ipairs(wanted) do
    if rover:move(d) then return end
  end
  -- A wall on the way: step aside, trying a different side each time.
  detours = detours + 1
  for i = 0, 3 do
    if rover:move(dirs[(detours + i) % 4 + 1]) then return end
  end
end

events:on(events.EventType.TICK, function()
  local gem = grid:nearest_gem()
  if gem then step_towards(gem.x, gem.y) end
  stats:set("carried", rover:gems())
  stats:set("on board", grid:gems_left())
  stats:set("detours", detours)
end)

events:on(events.EventType.GEM_COLLECTED, function(e)
  shared:int("collected"):increment()
  logger:info(("gem at %d,%d (%d carried)"):format(e.x, e.y, e.total))
end)
