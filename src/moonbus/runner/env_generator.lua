-- A runner worker's environment-builder generator (see env_builder.py).
local T1, T2 = ...
local function sorted_keys(a, b, where)
  local keys = {}
  for k in pairs(a) do
    if type(k) ~= "string" then
      return nil, where .. " has a non-string key"
    end
    if rawget(b, k) == nil then
      return nil, where .. "." .. k .. " exists in only one environment"
    end
    keys[#keys + 1] = k
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then
      return nil, where .. "." .. tostring(k) .. " exists in only one environment"
    end
  end
  table.sort(keys)
  return keys
end
if getmetatable(T1) ~= nil or getmetatable(T2) ~= nil then
  return nil, "environments have a metatable"
end
local keys, why = sorted_keys(T1, T2, "_G")
if not keys then
  return nil, why
end
local head, fields = { "local T = ...", "local T_load = T.load" }, {}
for i, k in ipairs(keys) do
  local a, b = rawget(T1, k), rawget(T2, k)
  if k == "_G" then
    if not (rawequal(a, T1) and rawequal(b, T2)) then
      return nil, "_G is not the environment itself"
    end
  elseif k == "load" then
    if type(a) ~= "function" then
      return nil, "load is not a function"
    end
  elseif type(a) == "table" then
    if rawequal(a, b) then
      return nil, k .. " is one table shared by all environments"
    end
    if getmetatable(a) ~= nil then
      return nil, k .. " has a metatable"
    end
    local sub, why2 = sorted_keys(a, b, k)
    if not sub then
      return nil, why2
    end
    local lib = "L" .. i
    head[#head + 1] = string.format("local %s = T[%q]", lib, k)
    local parts = {}
    for _, kk in ipairs(sub) do
      local v = rawget(a, kk)
      if type(v) == "table" or not rawequal(v, rawget(b, kk)) then
        return nil, k .. "." .. kk .. " is not one shared value"
      end
      parts[#parts + 1] = string.format("[%q] = %s[%q]", kk, lib, kk)
    end
    fields[#fields + 1] = string.format("[%q] = {%s}", k, table.concat(parts, ", "))
  elseif not rawequal(a, b) then
    return nil, k .. " differs between environments"
  elseif type(a) == "table" or type(a) == "userdata" or type(a) == "thread" then
    return nil, k .. " is a mutable shared value"
  else
    fields[#fields + 1] = string.format("[%q] = T[%q]", k, k)
  end
end
if rawget(T1, "_G") == nil or rawget(T1, "load") == nil then
  return nil, "environments lack _G or load"
end
head[#head + 1] = "return function()"
head[#head + 1] = "  local env = {" .. table.concat(fields, ", ") .. "}"
head[#head + 1] = "  env._G = env"
head[#head + 1] = "  env.load = function(chunk, chunkname, mode, chunkenv)"
head[#head + 1] = "    if chunkenv == nil then chunkenv = env end"
head[#head + 1] = "    return T_load(chunk, chunkname, mode, chunkenv)"
head[#head + 1] = "  end"
head[#head + 1] = "  return env"
head[#head + 1] = "end"
return table.concat(head, "\n")
