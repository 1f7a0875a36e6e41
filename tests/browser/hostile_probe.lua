-- hostile_probe.lua: events the console must still show, as text
-- (tests/browser/test_console_hostile.py): a type that is markup (no
-- whitespace, so it is a valid type name) and data that is not finite.
function poll()
  events.emit("<svg/onload=window.__moonbusPwned=1>", { v = 0/0, w = 1/0 })
  stats.set("ratio", 0/0)
  return 300
end
