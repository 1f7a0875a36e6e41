-- trip.lua: one trip to the bank as a small state machine, driven by poll().
-- A module of the banker folder script: `require("trip")` in main.lua.

local trip = {}

-- A new trip for `item`: remembers how many were held when it began.
function trip.start(item)
  return { item = item, held = inventory:count(item), state = "walking" }
end

-- Advance the trip by one poll. Returns true and how many `item`s were
-- deposited when the bank has been used and closed again.
function trip.step(t)
  if t.state == "walking" then
    if bank:is_open() then
      t.state = "open"
    else
      bank:open()
      return false
    end
  end
  if t.state == "open" then
    local before = bank:count(t.item)
    bank:deposit_all()
    t.deposited = bank:count(t.item) - before
    bank:close()
    return true, t.deposited
  end
  return false
end

return trip
