-- moonbus script library: installs the script-facing globals into one
-- sandboxed environment (one per engine). Called by the host with:
--   env      the environment table made by the sandbox's make_env
--   py       a table of Python bridge functions (see moonbus.host.bridge)
--   info     { engine = "event" | "main", event_types = {NAME = "name"...},
--              sleep = <sandbox sleep>, stop_token = <string>,
--              host_function = <prelude's wrapper for Python callables> }
-- Returns the Lua-side dispatcher used by the host to call handlers.
local env, py, info = ...

local type, error, select, tostring, pairs, rawget, rawequal, setmetatable =
  type, error, select, tostring, pairs, rawget, rawequal, setmetatable
local concat = table.concat
local engine_kind = info.engine
local sandbox_sleep = info.sleep
local STOP_TOKEN = info.stop_token
-- Wraps a Python callable as a plain Lua function whose errors are strings.
local host_function = info.host_function

-- `lib.fn(...)` and `lib:fn(...)` both work: drop a leading self (any of
-- the library objects installed below).
local selves = setmetatable({}, { __mode = "k" })
local function method_args(_, ...)
  if select("#", ...) > 0 and selves[(select(1, ...))] then
    return select(2, ...)
  end
  return ...
end
local function library(name, lib)
  local proxy = setmetatable({}, {
    __index = lib,
    __newindex = function() error(name .. " is read-only", 2) end,
    __metatable = name,
  })
  selves[proxy] = true
  selves[lib] = true
  return proxy
end

---------------------------------------------------------------- events
-- id -> the handler function, or for a once-handler { fn = function }: the
-- delivery of a plain handler reads no table but this one (at 10,000 scripts
-- each object a delivery touches is a cache miss).
local handlers = {}
local patterns = {}      -- id -> the event name or pattern it was registered for
-- The seq of the event whose handler runs now (event engine; false before
-- the first), passed with every emit so the host counts it against that
-- event's cascade. A table field, not a local: the C deliver (c_deliver in
-- lua/_fastcall.c) holds this table and sets the field directly, instead of
-- reaching it through the Lua deliver's upvalues (at 10,000 scripts each
-- object touched per delivery is a cache miss). Never reassigned: c_deliver
-- keeps the table it found when the delivery was made.
local delivering = { seq = false }
local events = {}
events.EventType = {}
for k, v in pairs(info.event_types) do
  events.EventType[k] = v
end

local function register(once, ...)
  local name, fn = method_args(events, ...)
  if type(name) ~= "string" then
    error("events.on: event name must be a string, got " .. type(name), 3)
  end
  if type(fn) ~= "function" then
    error("events.on: handler must be a function, got " .. type(fn), 3)
  end
  if not py.event_known(name) then
    -- level 3: the script line calling events:on (on and once tail-call register)
    py.undeclared_event(name, select(2, pcall(error, "", 3)))
  end
  local id = py.subscribe(name, once)
  if type(id) == "string" then -- refused (max_handlers_per_script): the message
    error(id, 3)
  end
  handlers[id] = once and { fn = fn } or fn
  patterns[id] = name
  return id
end

function events.on(...)
  return register(false, ...)
end

function events.once(...)
  return register(true, ...)
end

function events.off(...)
  local a, b = method_args(events, ...)
  if type(a) == "number" then
    if handlers[a] == nil then
      return false
    end
    handlers[a], patterns[a] = nil, nil
    py.unsubscribe(a)
    return true
  end
  if type(a) == "string" and type(b) == "function" then
    local removed = 0
    for id, h in pairs(handlers) do
      if patterns[id] == a and (h == b or (type(h) == "table" and h.fn == b)) then
        handlers[id], patterns[id] = nil, nil
        py.unsubscribe(id)
        removed = removed + 1
      end
    end
    return removed > 0
  end
  error("events.off: expected a handler id, or an event name and a function", 2)
end

function events.emit(...)
  local name, data = method_args(events, ...)
  if type(name) ~= "string" then
    error("events.emit: event name must be a string, got " .. type(name), 2)
  end
  if data ~= nil and type(data) ~= "table" then
    error("events.emit: event data must be a table, got " .. type(data), 2)
  end
  -- A refused emit (a cascade limit) comes back as (nil, message) and is
  -- raised here, at the caller's line, rather than as a host exception.
  local seq, refused = py.emit(name, data, delivering.seq or nil)
  if refused ~= nil then
    error(refused, 2)
  end
  return seq
end

env.events = library("events", events)

-- Called by the host (through the sandbox's guarded call) to run one handler
-- as a coroutine task (main engine, deferred delivery).
local function dispatch(id, event)
  local h = handlers[id]
  if h == nil then
    return false
  end
  if type(h) == "table" then -- a once-handler
    handlers[id], patterns[id] = nil, nil
    h = h.fn
  end
  h(event)
  return true
end

-- Event-engine hot path, called directly by the host (no trampoline): fills
-- in tick/type/seq unless the data has them, runs the handler under xpcall
-- and returns (ok, traceback) like the sandbox's guarded call.
local message_handler = info.message_handler
local function deliver(id, event, tick, seq, event_type)
  local h = handlers[id]
  if h == nil then
    return true
  end
  if type(h) == "table" then -- a once-handler
    handlers[id], patterns[id] = nil, nil
    h = h.fn
  end
  if event.tick == nil then
    event.tick = tick
  end
  if event.type == nil then
    event.type = event_type
  end
  if event.seq == nil then
    event.seq = seq
  end
  -- Left set afterwards: event-engine code runs only in handlers (and in
  -- the chunk, before any), so the next handler sets it before it matters.
  delivering.seq = seq
  return xpcall(h, message_handler, event)
end

-- Called by the host when a once-handler fired in the other engine, or when
-- the host drops a subscription.
local function forget(id)
  handlers[id], patterns[id] = nil, nil
end

---------------------------------------------------------------- logger
local function render(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  return concat(parts, " ")
end

-- The host cuts a line to its max_log_line setting; a line longer than
-- info.log_transfer bytes is cut here already, so that a huge line is never
-- copied into the host (its full length still goes along, for the marker).
local LOG_TRANSFER = info.log_transfer
local string_sub, string_byte = string.sub, string.byte
local function log(level, text)
  local size = #text
  if size > LOG_TRANSFER then
    -- Not inside a UTF-8 character: back off over continuation bytes (0x80-0xBF).
    local cut = LOG_TRANSFER
    for _ = 1, 3 do
      local b = string_byte(text, cut + 1)
      if b < 0x80 or b >= 0xC0 then
        break
      end
      cut = cut - 1
    end
    text = string_sub(text, 1, cut)
  end
  py.log(level, text, size)
end

local logger = {}
for _, level in pairs({ "debug", "info", "warn", "error" }) do
  logger[level] = function(...)
    log(level, render(method_args(logger, ...)))
  end
end
env.logger = library("logger", logger)
env.print = function(...)
  log("info", render(...))
end

---------------------------------------------------------------- stats
local stats = {}
function stats.set(...)
  local key, value = method_args(stats, ...)
  py.stats_set(key, value)
end
function stats.get(...)
  return py.stats_get((method_args(stats, ...)))
end
function stats.clear(...)
  py.stats_clear()
end
env.stats = library("stats", stats)

---------------------------------------------------------------- options
local function readonly(t, what)
  local proxy = {}
  for k, v in pairs(t) do
    if type(v) == "table" then
      t[k] = readonly(v, what)
    end
  end
  return setmetatable(proxy, {
    __index = t,
    __newindex = function() error(what .. " is read-only", 2) end,
    __pairs = function() return pairs(t) end,
    __len = function() return #t end,
    __metatable = what,
  })
end
env.options = readonly(py.options(), "options")

---------------------------------------------------------------- sleep, time
if engine_kind == "main" then
  env.sleep = function(ms)
    local r = sandbox_sleep(ms)
    if r == STOP_TOKEN then
      error("script stopped", 2)
    end
    return true
  end
else
  env.sleep = function()
    error("sleep() is not allowed in event handlers (they run in the event engine)", 2)
  end
end
env.time = py.time

-- Reproducible runs (docs/replay.md): math.random draws from a generator
-- seeded from the run's seed (per script and engine), and in virtual time
-- os.time/os.clock/os.date read the virtual clock (seconds since the run
-- began), never the wall clock.
if info.random_seed ~= nil then
  math.randomseed(info.random_seed)
end
if py.virtual_clock ~= nil then
  local virtual_clock, floor = py.virtual_clock, math.floor
  local os_time, os_date = env.os.time, env.os.date
  env.os.clock = function() return virtual_clock() end
  env.os.time = function(t)
    if t == nil then return floor(virtual_clock()) end
    return os_time(t)
  end
  env.os.date = function(format, t)
    return os_date(format, t == nil and floor(virtual_clock()) or t)
  end
end

---------------------------------------------------------------- shared
-- Kind name -> method names, in the order the Python bridge returns them.
local KIND_METHODS = info.shared_methods
-- Makes the quick C call of a host object (nil: none; moonbus.lua.fastconvert).
local quick_bind = info.quick_bind
local shared = {}

-- A handle's method calling host function f: the quick C call first when
-- there is one (it answers nothing unless it did the plain case), else f,
-- which raises the store's own error. For a method, `handle` is its handle:
-- the first argument must be it (`h:increment(5)`), so that a '.' typed for
-- a ':' (`h.increment(5)`, which would take the 5 for the handle) is an
-- error naming the method instead of a silent increment by 1. The kind
-- check (`handle` nil) is called with no arguments. `label` and `name`
-- (the handle's key and the method's name) make that error. For a
-- memory-store int cell the method is a C closure doing the plain case
-- itself and calling this Lua closure for anything else (quick_handle_method
-- in _fastconvert.c, which checks the handle too; the kind check is
-- quick_method): no Lua function runs between `h:increment()` and the cell.
local function host_method(f, quick, address, handle, label, name)
  local q = quick and quick_bind ~= nil and quick_bind(quick, address) or nil
  local level = 2 -- the script's frame; 3 under the C closure below
  local function method(self, ...)
    if handle ~= nil and not rawequal(self, handle) then
      error(label .. ": '" .. name .. "' must be called as a method (handle:" .. name ..
            "(...)), with ':' not '.'", level)
    end
    if q ~= nil then
      local r = q(...)
      if r ~= nil then
        return r
      end
    end
    return f(...)
  end
  local flat = q ~= nil and (handle ~= nil and quick_bind(quick, address, method, handle)
                             or quick_bind(quick, address, method)) or nil
  if flat ~= nil then
    level = 3
    return flat
  end
  return method
end

-- The handle, and its kind check: py.shared_handle returns the methods in
-- KIND_METHODS order, then the check, then (quick, address) for each of
-- those (fastconvert.quick_pairs).
local function make_handle(kind, name)
  local fns = { py.shared_handle(kind, name) }
  local methods = KIND_METHODS[kind]
  local count = #methods
  local index = {}
  local handle = {}
  local label = "shared " .. kind .. " '" .. name .. "'"
  for i = 1, count do
    local method = methods[i]
    local f = host_function(fns[i], "shared " .. kind .. " " .. method)
    index[method] = host_method(f, fns[count + 2 * i], fns[count + 2 * i + 1], handle, label,
                                method)
  end
  -- called with no arguments, and no handle to check
  local check = host_method(host_function(fns[count + 1], "shared"),
                            fns[3 * count + 2], fns[3 * count + 3])
  return setmetatable(handle, {
    __index = index,
    __newindex = function() error("shared handles are read-only", 2) end,
    __tostring = function() return "shared " .. kind .. " " .. name end,
    __metatable = "shared " .. kind,
  }), check
end

-- Handles and their kind checks, by kind: in a kind's table, name -> handle
-- and handle -> its check (names are strings, handles tables: the keys never
-- meet). Set once per name and never changed or removed: the C closure keeps
-- the last name it found with its handle and check (quick_shared in
-- _fastconvert.c), and a test holds this file to it. One table per kind, made here, so that the C closure below holds it
-- (one table reached per `shared:int(name)`, no lookup of the kind).
local handle_cache = {}
for kind in pairs(KIND_METHODS) do
  handle_cache[kind] = {}
end
-- `level`: where the name error points, 2 from shared[kind] (the script's
-- line), 3 from the C closure below (past its C frame: the same line).
local function get_handle(kind, level, ...)
  local name = method_args(shared, ...)
  if type(name) ~= "string" then
    error("shared:" .. kind .. ": name must be a string, got " .. type(name), level)
  end
  local handles = handle_cache[kind]
  local h = handles[name]
  if h == nil then
    local check
    h, check = make_handle(kind, name)
    handles[h] = check
    handles[name] = h
  else
    handles[h]()
  end
  return h
end
-- The script's `shared` (read-only, see library), made before the kinds'
-- functions below so that the C closures know it as their self.
local shared_library = library("shared", shared)
for kind in pairs(KIND_METHODS) do
  if quick_bind ~= nil then
    -- In C when quick calls are bound (quick_shared in _fastconvert.c): a
    -- cached handle whose check passes comes back with no Lua function run;
    -- anything else runs get_handle, with the same errors.
    shared[kind] = quick_bind(selves, shared_library, handle_cache[kind], function(...)
      return get_handle(kind, 3, ...)
    end)
  else
    shared[kind] = function(...)
      return get_handle(kind, 2, ...)
    end
  end
end
function shared.contains(...)
  return py.shared_contains((method_args(shared, ...)))
end
function shared.remove(...)
  return py.shared_remove((method_args(shared, ...)))
end
function shared.clear(...)
  return py.shared_clear()
end
env.shared = shared_library

---------------------------------------------------------------- require
if py.require ~= nil then
  local loaded = {}
  local loading = {}
  env.require = function(name)
    if type(name) ~= "string" then
      error("require: module name must be a string", 2)
    end
    local m = loaded[name]
    if m ~= nil then
      return m
    end
    if loading[name] then
      error("require: circular require of '" .. name .. "'", 2)
    end
    loading[name] = true
    local chunk = py.require(name)
    local ok, result = pcall(chunk, name)
    loading[name] = nil
    if not ok then
      error(result, 0)
    end
    if result == nil then
      result = true
    end
    loaded[name] = result
    return result
  end
end

---------------------------------------------------------------- host API globals
for name, value in pairs(py.apis()) do
  env[name] = value
end

-- A full collection, run by the host once the chunk has loaded: what the
-- setup left behind (about a quarter of a fresh state) is freed at once,
-- not kept until the collector next runs (docs/limits.md, per-script memory).
-- Then garbage of `phase` times what the state keeps (phase: a share of it
-- below the growth that starts its next young collection, from
-- moonbus.lua.sandbox.gc_phase): scripts loaded together would otherwise
-- collect in step, all in the same tick.
local collect_garbage = collectgarbage
local function collect(phase)
  collect_garbage("collect")
  for _ = 1, collect_garbage("count") * 1024 * phase // 56 do
    local _ = {} -- 56 bytes each (a growing array would add powers of two)
  end
end

-- Called by the host before a call of its own into this engine
-- (ScriptHost.call, the admin eval) while no handler runs: what that call
-- emits is caused by no event (delivering.seq keeps the last handler's seq,
-- which a call nested in a handler rightly inherits).
local function forget_cause()
  delivering.seq = false
end

return { dispatch = dispatch, deliver = deliver, forget = forget, collect = collect,
         forget_cause = forget_cause }
