-- moonbus sandbox prelude.
--
-- Runs once in every fresh Lua state, with the full standard library, before
-- any user code. It captures the privileged functions it needs as upvalues,
-- builds the safe environment factory and the call trampolines, and returns
-- them to Python (how Python functions and host objects appear to scripts is
-- host_bridge.lua, run just before). User code never runs in this state's real _G: it runs in an
-- environment table made by `make_env`, which contains only what is listed
-- below. Nothing in that environment can reach `debug`, `io`, `package`,
-- the real `load`, `string.dump` or any Python object that was not exposed on
-- purpose.
--
-- Time limits: the host sets a Lua count hook asynchronously (from its
-- watchdog thread) when a call passes its deadline. Hooks are per Lua thread,
-- so every coroutine gets the same hook function registered at creation
-- (mask 0: costs nothing until armed), and the host is told which coroutines
-- are running (enter/leave) so it can arm all of them at once.
--
-- Compiling: the Lua parser runs no hooks, so a source that is costly to
-- parse would run past any time limit. Every compile (the host's, and `load`
-- in a script) feeds the parser through a reader function that hands out
-- COMPILE_PIECE bytes at a time: the reader is Lua code, so an armed hook
-- fires in it and ends the parse (load returns "time limit exceeded" and the
-- next instruction of the caller raises again). Between two reader calls the
-- parser handles one piece, which bounds how late the limit bites. Sources
-- longer than `max_source` bytes are refused before parsing (`on_refused`
-- tells the host, which counts them).

local py_enter, py_leave, pyobj_probe, max_source, COMPILE_PIECE, on_refused,
  strings, gc_minor = ...

local debug_sethook = debug.sethook
local debug_traceback = debug.traceback
local debug_gethook = debug.gethook
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_running, co_isyieldable, co_close =
  coroutine.status, coroutine.running, coroutine.isyieldable, coroutine.close
local real_load, real_setmetatable, real_getmetatable = load, setmetatable, getmetatable
local real_collectgarbage = collectgarbage
local rawget, rawset, type, error, select, pairs, tostring = rawget, rawset, type, error, select, pairs, tostring
local xpcall, pcall = xpcall, pcall
-- find: the C function, only for plain one-character searches (memchr);
-- scripts get the bounded one (lazy_strings.lua).
local fmt, find, sub = string.format, strings.c_find, string.sub
local pack, unpack = table.pack, table.unpack

local TIME_LIMIT_MESSAGE = "time limit exceeded"
local function on_deadline()
  error(TIME_LIMIT_MESSAGE, 2)
end

-- Register the deadline hook for the main thread with an empty mask: the hook
-- table entry exists, the hook itself is off until the watchdog arms it.
debug_sethook(on_deadline, "", 0)

-- Python objects reach Lua only as functions the host passes in on purpose.
-- Seal lupa's shared metatable for wrapped Python objects so scripts cannot
-- fetch it (it holds __gc and __index) or replace it.
local pymt = real_getmetatable(pyobj_probe)
if pymt ~= nil then
  rawset(pymt, "__metatable", "python object")
end

-- String helpers, added to the real string table (the string metatable's
-- __index) so that `s:starts_with(x)` works, and copied into every
-- environment. contains, trim and split need the bounded find: they come
-- with it, on first use (lazy_strings.lua).
local string_lib = string
function string_lib.starts_with(s, x)
  return sub(s, 1, #x) == x
end
function string_lib.ends_with(s, x)
  return x == "" or sub(s, -#x) == x
end
string_lib.dump = nil
rawset(real_getmetatable(""), "__metatable", "string")

-- Marker yielded by sleep() up to the host's scheduler, through user coroutines.
local SLEEP = real_setmetatable({}, { __name = "moonbus.sleep", __metatable = false })

local function safe_create(f)
  local co = co_create(f)
  debug_sethook(co, on_deadline, "", 0)
  return co
end

-- Coroutines the host holds a pointer to while they run (LuaEngine._chain),
-- kept alive here so that the pointer stays valid: until fn returns, or, when
-- it does not return normally (an abort, or an error between enter and
-- leave), until the host calls `forget` at the end of the call.
local entered = {}

-- Run fn(co, ...) (resume or close: both run code in co) with co reported to
-- the host, so that an abort also arms co.
local function tracked(co, fn, ...)
  local ptr = fmt("%p", co)
  entered[co] = (entered[co] or 0) + 1
  py_enter(ptr)
  local r = pack(fn(co, ...))
  py_leave(ptr)
  local n = entered[co] - 1
  entered[co] = n > 0 and n or nil
  return r
end

local function tracked_resume(co, ...)
  return tracked(co, co_resume, ...)
end

-- Coroutines that run the host's lifecycle tasks (see new_task): only the host
-- resumes or closes them; a script that got one from coroutine.running() cannot.
local host_owned = real_setmetatable({}, { __mode = "k" })

-- coroutine.close runs the pending __close handlers of a suspended (or
-- failed) coroutine in that coroutine: it must be armed by an abort too.
local function safe_close(co)
  if host_owned[co] then
    error("cannot close the script's own lifecycle coroutine", 2)
  end
  if type(co) ~= "thread" then
    error("bad argument #1 to 'close' (coroutine expected)", 2)
  end
  local status = co_status(co)
  if status == "running" or status == "normal" then
    error("cannot close a " .. status .. " coroutine", 2)
  end
  local r = tracked(co, co_close)
  return unpack(r, 1, r.n)
end

-- After a call in which a tracked fn did not return normally: give those
-- coroutines their idle hook back (one still armed would fail at its next
-- resume, in a later call) and let them go.
local function forget()
  for co in pairs(entered) do
    debug_sethook(co, on_deadline, "", 0)
    entered[co] = nil
  end
end

-- True while some coroutine is tracked past its resume (until `forget`): the
-- runner's batches stop after a job that left one, so the next job of the
-- same engine call never sees what it keeps alive.
local next = next
local function tracking()
  return next(entered) ~= nil
end

-- resume that forwards sleep() requests from nested coroutines to the host.
local function safe_resume(co, ...)
  if type(co) ~= "thread" then
    error("bad argument #1 to 'resume' (coroutine expected)", 2)
  end
  if host_owned[co] then
    error("cannot resume the script's own lifecycle coroutine", 2)
  end
  local r = tracked_resume(co, ...)
  while r[1] and r[2] == SLEEP do
    if not co_isyieldable() then
      -- Resumed from inside a C function (a string.gsub callback, a sort
      -- comparator...): the sleep cannot reach the host from here, and the
      -- marker must never reach the script (it could forge a sleep with it).
      error("sleep() cannot wait here: the coroutine that called it was resumed inside a C "
        .. "function (such as a string.gsub callback); call sleep from plain script code", 2)
    end
    local resumed = pack(co_yield(SLEEP, r[3]))
    r = tracked_resume(co, unpack(resumed, 1, resumed.n))
  end
  return unpack(r, 1, r.n)
end

-- Scripts' coroutine.create/wrap: a bad argument is reported where the script
-- called, as the standard functions do.
local function need_function(f, what)
  if type(f) ~= "function" then
    error("bad argument #1 to '" .. what .. "' (function expected, got " .. type(f) .. ")", 3)
  end
end

local function user_create(f)
  need_function(f, "create")
  return safe_create(f)
end

local function safe_wrap(f)
  need_function(f, "wrap")
  local co = safe_create(f)
  return function(...)
    local r = pack(safe_resume(co, ...))
    if not r[1] then
      error(r[2], 0)
    end
    return unpack(r, 2, r.n)
  end
end

local function safe_setmetatable(t, mt)
  if type(t) ~= "table" then
    error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2)
  end
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in the sandbox", 2)
  end
  return real_setmetatable(t, mt)
end

-- xpcall's message handler runs before the error unwinds. For the deadline's
-- error that is still inside the hook, where Lua switches hooks off: a user
-- handler that loops would never be stopped. While the running thread is armed
-- (it has a hook), the user's handler is skipped and the error passes through.
local function safe_xpcall(f, handler, ...)
  if type(handler) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected, got " .. type(handler) .. ")", 2)
  end
  return xpcall(f, function(err)
    if debug_gethook() ~= nil then
      return err
    end
    return handler(err)
  end, ...)
end

local GC_ALLOWED = { collect = true, count = true, step = true, isrunning = true }
local function safe_collectgarbage(opt, ...)
  opt = opt or "collect"
  if not GC_ALLOWED[opt] then
    error("collectgarbage('" .. tostring(opt) .. "') is not allowed in the sandbox", 2)
  end
  return real_collectgarbage(opt, ...)
end

-- What is being compiled right now, for the host: a parse cut by the time
-- limit never returns here to clear it (see load_text), so after an aborted
-- call the host finds the chunk name in `compiling.chunk`, names it in the
-- timeout error and counts the cut compile (then clears it).
local compiling = {}

-- How Lua shows a chunk name in messages (luaO_chunkid, without truncation).
local function chunk_id(chunkname)
  local first = sub(chunkname, 1, 1)
  if first == "=" or first == "@" then
    return sub(chunkname, 2)
  end
  local line = sub(chunkname, 1, (find(chunkname, "\n", 1, true) or 0) - 1)
  return '[string "' .. line .. (#line < #chunkname and '..."]' or '"]')
end

-- The parser's nesting limit raises "C stack overflow" with no chunk name
-- (the running function is load itself): say which chunk and why.
local C_STACK_OVERFLOW <const> = "C stack overflow"

-- Compile text `source` (mode "t") into `env`, feeding the parser piece by
-- piece (see the top of this file): returns the function, or nil and the
-- error message, as load does.
local function load_text(source, chunkname, env)
  local chunk = source
  local size = #source
  if size > COMPILE_PIECE then
    local at = 1
    chunk = function()
      local first = at
      if first > size then
        return nil
      end
      at = first + COMPILE_PIECE
      return sub(source, first, first + COMPILE_PIECE - 1)
    end
  end
  compiling.chunk = chunkname
  local fn, err = real_load(chunk, chunkname, "t", env)
  compiling.chunk = nil
  if type(err) == "string" and (err == C_STACK_OVERFLOW
      or sub(err, 1, #C_STACK_OVERFLOW + 1) == C_STACK_OVERFLOW .. "\n") then
    err = chunk_id(chunkname) .. ": too many nested blocks, functions, calls or "
      .. "expressions (the parser ran out of C stack)"
  end
  return fn, err
end

local function copy(t)
  local r = {}
  for k, v in pairs(t) do
    r[k] = v
  end
  return r
end

local BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
  "rawlen", "rawset", "select", "tonumber", "tostring", "type", "_VERSION",
}
local base_values = {}
for _, name in pairs(BASE) do
  base_values[name] = _G[name]
end

base_values.xpcall = safe_xpcall
local math_lib, table_lib, utf8_lib = math, table, utf8
local os_lib = { clock = os.clock, time = os.time, date = os.date, difftime = os.difftime }

-- A fresh environment: copies of the safe libraries, so a script (or a runner
-- job) that changes `string.x` or `math.pi` changes only its own copy.
local function make_env()
  local env = {}
  for k, v in pairs(base_values) do
    env[k] = v
  end
  env.string = strings.copy_string()
  env.table = copy(table_lib)
  env.math = copy(math_lib)
  env.utf8 = copy(utf8_lib)
  env.os = copy(os_lib)
  env.coroutine = {
    create = user_create, resume = safe_resume, wrap = safe_wrap, yield = co_yield,
    status = co_status, running = co_running, isyieldable = co_isyieldable, close = safe_close,
  }
  env.setmetatable = safe_setmetatable
  env.xpcall = safe_xpcall
  env.getmetatable = real_getmetatable
  env.collectgarbage = safe_collectgarbage
  env.unpack = table_lib.unpack
  env.load = function(chunk, chunkname, mode, chunkenv)
    if type(chunk) ~= "string" then
      error("load: only text chunks (strings) are allowed in the sandbox", 2)
    end
    if mode ~= nil and mode ~= "t" then
      error("load: binary chunks are not allowed in the sandbox", 2)
    end
    if #chunk > max_source then
      on_refused()
      error(fmt("load: the source is %d bytes, more than the limit of %d bytes "
        .. "(max_source_bytes)", #chunk, max_source), 2)
    end
    if chunkenv == nil then
      chunkenv = env
    end
    return load_text(chunk, chunkname or "=(load)", chunkenv)
  end
  env._G = env
  return env
end

-- Error message handler: message plus Lua traceback, without trusting the
-- error object (its __tostring runs under the same deadline as the call).
local function error_text(err)
  if type(err) == "string" then
    return err
  elseif type(err) == "number" then
    return tostring(err)
  end
  local ok, s = pcall(tostring, err)
  if ok and type(s) == "string" then
    return s
  end
  return "(error object is a " .. type(err) .. " value)"
end

-- Error texts go to Python, which reads Lua strings as UTF-8: bytes that are
-- not valid UTF-8 (a script's error("\xff")) become U+FFFD here, as Python's
-- errors="replace" would, so the error is reported instead of lost.
local utf8_len, utf8_concat = utf8.len, table.concat
local function valid_utf8(text)
  if utf8_len(text) then
    return text
  end
  local parts, i = {}, 1
  while true do
    local _, bad = utf8_len(text, i)
    if bad == nil then
      parts[#parts + 1] = sub(text, i)
      return utf8_concat(parts)
    end
    parts[#parts + 1] = sub(text, i, bad - 1)
    parts[#parts + 1] = "\u{FFFD}"
    i = bad + 1
  end
end

local function message_handler(err)
  return valid_utf8(debug_traceback(error_text(err), 2))
end

-- Call fn(...) under xpcall; the host reads (ok, results...) or (false, traceback).
local function call(fn, ...)
  return xpcall(fn, message_handler, ...)
end

-- Compile text only, into the given environment (the host checked the size).
local function compile(source, chunkname, env)
  return load_text(source, chunkname, env)
end

-- The lifecycle tasks (tasks.lua, stripped bytecode): new_task, drop_task,
-- step, take_spare, start_task. Loaded by the host with the first task, so
-- the states that never run one (event engines, runner states) do not
-- carry them (~2 KiB each).
local function load_tasks(source)
  return real_load(source, "=sandbox", "b")(safe_create, host_owned, SLEEP, error_text,
    co_resume, co_status, debug_traceback, fmt, co_yield, type, tostring)
end

local function sleep(ms)
  if not co_isyieldable() then
    error("sleep() is only allowed in on_start, poll, on_stop and deferred handlers", 2)
  end
  if ms ~= nil and type(ms) ~= "number" then
    error("bad argument #1 to 'sleep' (number expected, got " .. type(ms) .. ")", 2)
  end
  if ms ~= ms then
    error("bad argument #1 to 'sleep' (delay is nan: a number of milliseconds expected)", 2)
  end
  return co_yield(SLEEP, ms or 0)
end

-- Long-lived small states (a script's engines, thousands of them) use the
-- generational collector: the garbage their handlers make (an event table
-- per event) is collected after `gc_minor` % growth (the minor multiplier:
-- SandboxFactory.create) instead of at 100% (the incremental default's
-- pause). 0: the incremental collector. Scripts cannot change the mode
-- (safe_collectgarbage).
if gc_minor ~= 0 then
  real_collectgarbage("generational", gc_minor)
end

-- Strip the real globals: nothing outside make_env's tables stays reachable.
local real_G = _G
for k in pairs(real_G) do
  real_G[k] = nil
end

return {
  make_env = make_env,
  call = call,
  message_handler = message_handler,
  compile = compile,
  compiling = compiling,
  load_tasks = load_tasks,
  sleep = sleep,
  forget = forget,
  tracking = tracking,
  time_limit_message = TIME_LIMIT_MESSAGE,
}
