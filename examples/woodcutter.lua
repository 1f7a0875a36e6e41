-- woodcutter.lua: the table style. The chunk returns a table whose methods
-- script:on_start(), script:poll() and script:on_stop() are the lifecycle.
--
--   moonbus run examples/woodcutter.lua --ticks 500 --tick-ms 0 --summary out.json
--
-- The handler below is registered inside on_start, so it is a *deferred*
-- handler: it runs in the main engine, on the script thread, between polls,
-- and can close over `self` (the table) and its fields. Compare mining.lua,
-- whose load-time handler runs in the event engine and keeps its counts in
-- shared values because it cannot see the main engine's locals.

local script = { logs = 0, trips = 0 }

function script:on_start()
  self.started = time()
  events.on(events.EventType.INVENTORY_CHANGED, function(e)
    if e.change > 0 and e.item:name() == "Logs" then
      self.logs = self.logs + e.change
      stats.set("logs", self.logs)
      shared:int("logs"):set(self.logs) -- so the summary and other scripts see it
    end
  end)
  events.on(events.EventType.LEVEL_UP, function(e)
    if e.skill == "woodcutting" then
      logger.info("woodcutting level " .. e.level .. " after " .. self.logs .. " logs")
    end
  end)
  logger.info("chopping trees from tick " .. self.started)
end

function script:bank()
  if not bank:is_open() then
    bank:open()
    return 600
  end
  bank:deposit_all()
  bank:close()
  self.trips = self.trips + 1
  shared:int("trips"):set(self.trips)
  return 600
end

function script:poll()
  local me = players:local_player()
  if inventory:is_full() or bank:is_open() then
    return self:bank()
  end
  if me:is_animating() or me:is_moving() then
    return 600
  end
  local tree = game_objects:find_nearest({ name = "Tree", action = "Chop down" })
  if tree ~= nil and tree:interact({ action = "Chop down" }) then
    stats.set("tree", tree:x() .. "," .. tree:y())
  else
    stats.set("tree", "none standing")
  end
  return 600
end

function script:on_stop()
  logger.info(self.logs .. " logs in " .. (time() - self.started) .. " ticks, "
    .. self.trips .. " bank trips")
end

return script
