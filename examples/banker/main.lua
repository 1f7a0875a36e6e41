-- banker/: a folder script. manifest.json gives the options' defaults (and
-- their types: `--option batch=5` arrives as the number 5); this main.lua
-- loads its helper module with require, from this folder only.
--
--   moonbus run examples/banker --ticks 500 --tick-ms 0 --summary out.json
--   moonbus run examples/banker --option batch=5 --option announce=false --ticks 500 --tick-ms 0

local trip = require("trip")

local ITEM, ACTION, BATCH = options.item, options.action, options.batch

events.on(events.EventType.BANK_OPENED, function()
  shared:int("bank_visits"):increment()
end)

function on_start()
  if BATCH < 1 or BATCH > 28 then
    logger.error("option batch must be between 1 and 28, got " .. BATCH)
    return false
  end
  logger.info(ACTION .. " " .. ITEM .. ", banking every " .. BATCH)
end

local banking = nil

function poll()
  if banking ~= nil then
    local done, deposited = trip.step(banking)
    if done then
      banking = nil
      local total = shared:int("banked"):add(deposited)
      stats.set("banked", total)
      if options.announce then
        chat:send("banked " .. deposited .. " " .. ITEM:lower() .. ", " .. total .. " so far")
      end
    end
    return 600
  end
  local held = inventory:count(ITEM)
  stats.set("held", held)
  if held >= BATCH or inventory:is_full() then
    banking = trip.start(ITEM)
    return 600
  end
  local me = players:local_player()
  if me:is_animating() or me:is_moving() then
    return 600
  end
  local target = game_objects:find_nearest({ name = ITEM, action = ACTION })
  if target == nil or not target:interact({ action = ACTION }) then
    stats.set("state", "nothing to " .. ACTION:lower())
  else
    stats.set("state", ACTION:lower() .. " at " .. target:x() .. "," .. target:y())
  end
  return 600
end
