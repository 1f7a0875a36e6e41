-- html_probe.lua: every string this script shows is HTML with a script in it.
-- The console must show it as text (tests/browser/test_console.py).
local HTML = '<img src="x" onerror="window.__moonbusPwned = 1"><b>bold</b>'

function on_start()
  shared:string("html"):set(HTML)
end

function poll()
  events:emit("probe:html", { text = HTML })
  stats.set("<b>stat</b>", HTML)
  logger.warn(HTML)
  return 500
end
