-- chat_monitor.lua: count what the other players say, log private messages and trades.
--
--   moonbus run examples/chat_monitor.lua --ticks 500 --tick-ms 0 --summary out.json
--
-- Everything happens in one load-time handler, which lives in the event
-- engine and runs the moment a message arrives. The counts are shared
-- values: the summary (and any other script given the same namespace) sees
-- them. poll() only refreshes the stats panel now and then.

local MSG_PUBLIC, MSG_PRIVATE = 0, 7
local me -- the local player's name, looked up by the first handler call (a host
          -- call in top-level code would run twice: once in each engine)

local function kind_of(e)
  if e.msg_type == MSG_PRIVATE then
    return "private"
  elseif e.content:contains("trade") then
    return "trade"
  elseif e.msg_type == MSG_PUBLIC then
    return "public"
  end
  return "other"
end

events.on(events.EventType.MESSAGE_RECEIVED, function(e)
  me = me or players:local_player():name()
  if e.sender == me then
    return -- our own lines echo back as public chat
  end
  local kind = kind_of(e)
  local n = shared:int(kind):increment()
  shared:table("senders"):increment(e.sender)
  if kind == "private" then
    logger.info("private from " .. e.sender .. ": " .. e.content)
  elseif kind == "trade" then
    logger.warn("trade request from " .. e.sender .. " (#" .. n .. ")")
  end
end)

function poll()
  for _, kind in ipairs({ "public", "private", "trade" }) do
    stats.set(kind, shared:int(kind):get())
  end
  local busiest, most = nil, 0
  for sender, n in pairs(shared:table("senders"):to_table()) do
    if n > most or (n == most and busiest ~= nil and sender < busiest) then
      busiest, most = sender, n
    end
  end
  if busiest then
    stats.set("chattiest", busiest .. " (" .. most .. ")")
  end
  return 6000 -- every 10 ticks
end
