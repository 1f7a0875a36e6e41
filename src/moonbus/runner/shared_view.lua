-- Builds one namespace's read-only ``shared`` view for runner jobs (loaded by
-- moonbus/runner/shared_view.py). Arguments: py.handle(kind, name) returns the
-- read methods of that handle (in READS order), py.contains(name) the
-- store-level read; ``reads`` maps kind -> read method names; ``writes`` lists
-- the write methods, each an error here.
local py, reads, writes = ...
local error, type, select = error, type, select
local READ_ONLY = "shared is read-only in runner jobs"
local function read_only() error(READ_ONLY, 2) end
local view = {}
-- What jobs see: a proxy, so that no field of it can be replaced either.
local proxy = setmetatable({}, {
  __index = view, __newindex = read_only, __metatable = "shared",
})
local function args_of(self, ...)  -- shared:int(n) and shared.int(n) both work
  if self == proxy then return ... end
  return self, ...
end
for kind, names in pairs(reads) do
  view[kind] = function(...)
    local name = args_of(...)
    if type(name) ~= "string" then
      error("shared." .. kind .. ": name must be a string, got " .. type(name), 2)
    end
    local calls = { py.handle(kind, name) }
    local handle, methods = {}, {}
    for i, method in ipairs(names) do
      local call = calls[i]
      methods[method] = function(self, ...)
        if self == handle then return call(...) end
        return call(self, ...)
      end
    end
    for _, w in ipairs(writes) do
      methods[w] = read_only
    end
    return setmetatable(handle, {
      __index = methods, __newindex = read_only, __metatable = "shared handle",
    })
  end
end
view.contains = function(...) return py.contains((args_of(...))) end
view.remove = read_only
view.clear = read_only
return proxy
