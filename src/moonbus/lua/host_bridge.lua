-- moonbus sandbox: how Python functions and host objects appear to scripts.
--
-- Runs once in every fresh Lua state, with the full standard library, before
-- the prelude (which strips the globals afterwards); `...` is
-- moonbus.lua.host_errors.describe_host_error. Returns host_function,
-- build_class, make_proxy, unproxy, box and room to the engine (engine.py), which
-- hands them to the converter (convert.py) and to script_env.lua. Scripts
-- never see this table, only the functions and proxies it makes.
--
-- Threads: runs inside one Lua state, used by one thread at a time; the
-- proxy table below belongs to the state.

local py_describe = ...
local type, error, pcall, rawequal = type, error, pcall, rawequal
local real_setmetatable, sub = setmetatable, string.sub
local debug_getinfo, debug_getmetatable = debug.getinfo, debug.getmetatable

-- Python callables reach scripts only through host_function: a plain Lua
-- function (type "function", tostring "function: 0x..." like any other) that
-- calls the Python one. When Python raises, lupa's error value is the Python
-- exception wrapped as a userdata; the script gets a string instead, made by
-- moonbus.lua.host_errors (no repr, type name, address or traceback), with
-- the position of the script line that called in, as a Lua error would have.
-- Errors that are already Lua values (the time limit, "not enough memory", an
-- error from Lua code the host called back) pass through unchanged.
local MEMORY_MESSAGE <const> = "not enough memory"

-- A host call needs free Lua memory for what lupa pushes when Python
-- returns (the result, or the error it raises): lupa pushes it outside any
-- protected call, and a refused allocation there jumps past lupa's release
-- of the GIL, so the calling thread waits for ever on the GIL it holds
-- itself. moonbus.lua.lua_room refuses values larger than the free memory
-- less a margin, but a script can use that margin up itself before it
-- calls. So a call is refused here, before Python runs, while the state uses
-- more than room.limit KiB (its memory limit less lua_room.MARGIN: set by
-- the engine whenever the limit changes; math.huge without one), with Lua's
-- own out-of-memory message, which the script can pcall like any other.
local gc_count = collectgarbage
local room = { limit = math.huge }

local function script_position()
  local level = 3
  while true do
    local info = debug_getinfo(level, "Sl")
    if info == nil then
      return ""
    end
    local src = info.source
    if sub(src, 1, 1) == "@" and sub(src, -4) == ".lua" and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
    level = level + 1
  end
end

local function host_failure(name, err)
  if type(err) ~= "userdata" then
    error(err, 0)
  end
  local ok, text = pcall(py_describe, err, name)
  if not ok or type(text) ~= "string" then
    text = name .. ": error in the host"
  end
  if text == MEMORY_MESSAGE then
    error(text, 0)
  end
  error(script_position() .. text, 0)
end

local function host_function(f, name)
  local function settle(ok, ...)
    if ok then
      return ...
    end
    return host_failure(name, (...))
  end
  return function(...)
    if gc_count("count") > room.limit then
      error(MEMORY_MESSAGE, 0)
    end
    return settle(pcall(f, ...))
  end
end

-- Host API objects reach Lua as proxy tables (see moonbus.lua.exposure): the
-- Python object is kept in a private weak table, never in the proxy itself.
local proxied = real_setmetatable({}, { __mode = "k" })

-- A method's result that the host's C conversion built straight into Lua
-- (moonbus.lua.fastconvert, LuaConverter._invoke) arrives as BOX itself with
-- the table in BOX[1]: taken out here, so scripts never see BOX.
local BOX = {}

local function unbox(first, ...)
  if rawequal(first, BOX) then
    local value = BOX[1]
    BOX[1] = nil
    return value
  end
  return first, ...
end

local function build_class(name, methods, invoke, equals)
  local index = {}
  local same = host_function(equals, name .. " ==")
  local mt = {
    __index = index,
    __name = name,
    __metatable = name,
    __tostring = function() return name end,
    __eq = function(a, b)
      local x, y = proxied[a], proxied[b]
      return x ~= nil and y ~= nil and same(x, y)
    end,
  }
  for i = 1, #methods do
    local method = methods[i]
    local call = host_function(invoke, name .. ":" .. method)
    index[method] = function(self, ...)
      -- self must be a proxy of this class: another class's proxy would make
      -- invoke() call whatever that object has under this name.
      local obj = proxied[self]
      if obj == nil or debug_getmetatable(self) ~= mt then
        error("'" .. method .. "' must be called as a method (obj:" .. method .. "(...))", 2)
      end
      return unbox(call(obj, method, ...))
    end
  end
  return mt
end

local function make_proxy(obj, mt)
  local p = real_setmetatable({}, mt)
  proxied[p] = obj
  return p
end

local function unproxy(p)
  return proxied[p]
end

return {
  host_function = host_function,
  build_class = build_class,
  make_proxy = make_proxy,
  unproxy = unproxy,
  box = BOX,
  room = room,
}
