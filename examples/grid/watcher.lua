-- Keeps the score of the board from its events alone: no poll, handlers only.
events:on(events.EventType.GEM_SPAWNED, function()
  shared:int("spawned"):increment()
end)

events:on(events.EventType.GEM_COLLECTED, function(e)
  shared:int("collected"):increment()
  shared:int("best_total"):set(math.max(shared:int("best_total"):get(), e.total))
end)

events:on(events.EventType.TICK, function(e)
  if e.tick % 25 == 0 then
    logger:info(("tick %d: %d gems on the board"):format(e.tick, grid:gems_left()))
  end
end)
