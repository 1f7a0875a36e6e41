-- Walks the rover round a square, SIDE steps a side (one step a poll, every 600 ms),
-- and counts what it bumps into.
local side = options.side or 7
local order = { "east", "south", "west", "north" }
local leg, taken = 1, 0

events:on(events.EventType.ROVER_BUMPED, function(e)
  shared:int("bumps"):increment()
  logger:warn(("bumped into the %s going %s at %d,%d"):format(e.what, e.direction, e.x, e.y))
end)

events:on(events.EventType.ROVER_MOVED, function()
  shared:int("steps"):increment()
end)

function poll()
  rover:move(order[leg])
  taken = taken + 1
  if taken >= side then
    leg = leg % #order + 1
    taken = 0
  end
  stats:set("heading", order[leg])
  return 600
end
