-- mining.lua: mine copper and tin, count every ore in shared values, bank when full.
--
--   moonbus run examples/mining.lua --ticks 300 --tick-ms 0 --summary out.json
--
-- Option (--option k=v):
--   ore=iron   mine only this ore (copper, tin, iron needs mining 15, coal 30);
--              default: copper and tin
--
-- When the inventory is full it walks to the bank, deposits everything and
-- goes back to the rocks.
--
-- The ore counter below is a load-time handler: it lives in the event engine
-- and runs the moment the game reports a change, even while poll() sleeps.
-- Locals are not shared between the two engines, so the counts go through
-- `shared`, which both engines (and the summary) see.

local ORES = { "copper", "tin" }
if options.ore ~= nil then
  ORES = { tostring(options.ore):lower() }
end

local function is_ore(name)
  return name:ends_with(" ore") or name == "Coal"
end

events.on(events.EventType.INVENTORY_CHANGED, function(e)
  local name = e.item:name()
  if e.change > 0 and is_ore(name) then
    local total = shared:table("ores"):increment(name, e.change)
    stats.set(name, total)
  end
end)

events.on(events.EventType.LEVEL_UP, function(e)
  if e.skill == "mining" then
    logger.info("mining level " .. e.level)
  end
end)

function on_start()
  local me = players:local_player()
  logger.info(me:name() .. " starts mining " .. table.concat(ORES, "/") ..
    " at mining level " .. skills:level("mining"))
  shared:int("trips"):set(0)
end

local function bank_inventory()
  if not bank:is_open() then
    bank:open()
    return 600 -- walk to the booth; try again next tick
  end
  bank:deposit_all()
  bank:close()
  local trips = shared:int("trips"):increment()
  stats.set("bank trips", trips)
  logger.info("banked, trip " .. trips)
  return 600
end

local function mine_next_rock()
  for _, rock in ipairs(game_objects:find_all({ name = "Rocks", action = "Mine", ore = ORES })) do
    if rock:interact({ action = "Mine" }) then
      stats.set("target", rock:ore() .. " rocks at " .. rock:x() .. "," .. rock:y())
      return true
    end
  end
  return false
end

function poll()
  local me = players:local_player()
  if inventory:is_full() or bank:is_open() then
    return bank_inventory()
  end
  if me:is_animating() or me:is_moving() then
    return 600
  end
  if not mine_next_rock() then
    stats.set("target", "waiting for rocks to respawn")
  end
  stats.set("mining xp", skills:xp("mining"))
  return 600
end

function on_stop()
  local ores = shared:table("ores"):to_table()
  local parts = {}
  for name, n in pairs(ores) do
    parts[#parts + 1] = name .. "=" .. n
  end
  table.sort(parts)
  logger.info("stopped; ore mined: " .. (#parts > 0 and table.concat(parts, ", ") or "none"))
end
