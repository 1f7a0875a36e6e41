-- combat.lua: fight an NPC again and again, track kills and damage.
--
--   moonbus run examples/combat.lua --ticks 500 --tick-ms 0 --summary out.json
--   moonbus run examples/combat.lua --option target=Cow --ticks 500 --tick-ms 0
--
-- Options: target=Chicken (Chicken, Cow, Goblin, Hill Giant)
--          min_health=4   rest until health is back above this before a new fight
--
-- Kills and damage are counted from `combat_ended` by a load-time handler
-- (event engine); poll() (main engine) picks the next victim. The two engines
-- do not share locals, so the counts live in shared values.

local TARGET = tostring(options.target or "Chicken")
local MIN_HEALTH = tonumber(options.min_health) or 4

events.on(events.EventType.COMBAT_STARTED, function(e)
  logger.debug("fighting " .. e.target)
end)

events.on(events.EventType.COMBAT_ENDED, function(e)
  shared:int("damage"):add(e.damage_dealt)
  if e.reason == "killed" then
    local kills = shared:int("kills"):increment()
    shared:table("kills_by_target"):increment(e.target)
    stats.set("kills", kills)
  elseif e.reason == "died" then
    shared:int("deaths"):increment()
    logger.warn("died fighting " .. e.target)
  end
  stats.set("damage", shared:int("damage"):get())
end)

events.on(events.EventType.LEVEL_UP, function(e)
  logger.info(e.skill .. " level " .. e.level)
end)

function on_start()
  if npcs:find_nearest({ name = TARGET }) == nil then
    logger.error("no NPC called " .. TARGET .. " in this world")
    return false -- do not start
  end
  logger.info("hunting " .. TARGET .. "s")
end

function poll()
  local me = players:local_player()
  if me:is_in_combat() or me:is_moving() then
    return 600
  end
  if me:health() < MIN_HEALTH then
    stats.set("state", "resting (" .. me:health() .. "/" .. me:max_health() .. " hp)")
    return 600
  end
  for _, npc in ipairs(npcs:find_all({ name = TARGET, action = "Attack" })) do
    if not npc:is_in_combat() and npc:interact({ action = "Attack" }) then
      stats.set("state", "attacking " .. npc:name() .. " at " .. npc:x() .. "," .. npc:y())
      return 600
    end
  end
  stats.set("state", "waiting for a " .. TARGET .. " to respawn")
  return 600
end

function on_stop()
  logger.info("kills: " .. shared:int("kills"):get() .. ", damage dealt: " ..
    shared:int("damage"):get() .. ", deaths: " .. shared:int("deaths"):get())
end
