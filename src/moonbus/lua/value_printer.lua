-- Lua-style printing of values for ``moonbus repl`` and ``script.eval``
-- (loaded by moonbus/lua/value_printer.py as ``FORMATTER``). Compiled in a
-- fresh sandbox environment; returns ``run(f, width)``.
local function show(v, depth, seen)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" or getmetatable(v) ~= nil then return tostring(v) end
  if seen[v] then return "{...}" end
  if depth > 2 then return "{...}" end
  seen[v] = true
  local parts, count, n = {}, 0, #v
  for i = 1, n do
    count = count + 1
    if count > 50 then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = show(v[i], depth + 1, seen)
  end
  if count <= 50 then
    local keys = {}
    for key in pairs(v) do
      if not (math.type(key) == "integer" and key >= 1 and key <= n) then
        keys[#keys + 1] = key
      end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, key in ipairs(keys) do
      count = count + 1
      if count > 50 then parts[#parts + 1] = "..."; break end
      local label
      if type(key) == "string" and key:match("^[%a_][%w_]*$") then
        label = key
      else
        label = "[" .. show(key, depth + 1, seen) .. "]"
      end
      parts[#parts + 1] = label .. " = " .. show(v[key], depth + 1, seen)
    end
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

return function(f, width)
  local r = table.pack(f())
  local parts = {}
  for i = 1, r.n do
    local v = r[i]
    parts[i] = type(v) == "table" and show(v, 1, {}) or tostring(v)
  end
  local text = table.concat(parts, "\t")
  if #text > width then text = text:sub(1, width) .. " ..." end
  return r.n, text
end
