-- moonbus sandbox: string.find / match / gmatch / gsub that the time limit
-- can stop.
--
-- The C pattern matcher backtracks without bound, and a C function never
-- reaches the time limit's hook: string.find(("a"):rep(4e4), ".-.-b") runs
-- for minutes. This chunk replaces the four functions in the real string
-- library (so that s:find(...) gets them too) with wrappers that call the C
-- function only when it provably finishes within BUDGET steps, and
-- otherwise run the pure-Lua port in pmatch.lua, which the hook interrupts
-- like any other Lua code. Results and errors are those of the C functions.
--
-- The bound and why it is safe: pcost.lua. Beyond the budget the port
-- runs; its scan over start positions may jump ahead with C searches of at
-- most BUDGET steps for the first item, and a long plain find runs in C
-- over slices.
--
-- Errors. Arguments are checked here, in lauxlib's order and words
-- (luaL_checklstring, luaL_optinteger, luaL_argexpected, luaL_typeerror
-- with __name, "calling 'find' on bad self"). A C function's own errors
-- would name this chunk's line (a tail call from Lua to C keeps the Lua
-- frame), so C only gets patterns that cannot raise (pcost.lua's
-- error_free) and
-- replacement strings whose escapes are valid; a function's or table's
-- replacement value is checked in a closure that raises at the caller's
-- line. Everything else runs in the port, which raises the C messages at
-- the script's line. Known difference: a script that tail-calls these
-- functions (`return s:find(p)`) gets errors at its caller's line, naming
-- 'string.find', as with every wrapper written in Lua.
--
-- Runs once per state after bounded.lua, the matcher and pcost.lua, before
-- the prelude (full standard library); `...` is the tables returned by
-- pmatch.lua and pcost.lua. Returns a table for tests and benchmarks;
-- scripts never see it. One thread at a time uses the state; the caches
-- below belong to the state.

local port, cost = ...

local LOADED = package.loaded
local string_lib = string
local c_find, c_match, c_gmatch, c_gsub = string.find, string.match, string.gmatch, string.gsub
local byte, sub, fmt = string.byte, string.sub, string.format
local type, error, tostring, tonumber, select, rawget =
  type, error, tostring, tonumber, select, rawget
local tointeger = math.tointeger
local getinfo, getmetatable_raw = debug.getinfo, debug.getmetatable
local port_find, port_gmatch, port_gsub = port.find, port.gmatch, port.gsub

local BUDGET = cost.budget
local prepare, plain_cost, no_specials = cost.prepare, cost.plain_cost, cost.no_specials
local CACHE_LIMIT = 256         -- compiled patterns kept per cache
local CACHED_LENGTH = 1024      -- longer patterns are compiled on every call

-- The C functions under their usual names (for tracebacks; see bounded.lua).
LOADED["string.find"], LOADED["string.match"] = c_find, c_match
LOADED["string.gmatch"], LOADED["string.gsub"] = c_gmatch, c_gsub

-- Plain search from `start`, in C calls over slices of growing length, each
-- within BUDGET steps.
local function plain_find(s, p, start)
  local ls, lp = #s, #p
  local most = BUDGET // (lp + 1)
  if most < 1 then
    most = 1
  end
  local span = 256
  local last_start = ls - lp + 1
  while start <= last_start do
    if span > most then
      span = most
    end
    local hi = start + span - 1
    if hi > last_start then
      hi = last_start
    end
    local at = c_find(sub(s, start, hi + lp - 1), p, 1, true)
    if at then
      return start + at - 1, start + at + lp - 2
    end
    start = hi + 1
    span = span * 2
  end
  return nil
end

-- Compiled patterns with their thresholds, by pattern text; each table is
-- replaced by an empty one when full. Wrappers index them directly and
-- call `anchored_miss` / `gmatch_miss` on a miss.
local anchored_cache, anchored_count = {}, 0
local gmatch_cache, gmatch_count = {}, 0

local function anchored_miss(p)
  local cp = prepare(p, true)
  if #p <= CACHED_LENGTH then
    if anchored_count >= CACHE_LIMIT then
      anchored_cache, anchored_count = {}, 0
    end
    anchored_cache[p] = cp
    anchored_count = anchored_count + 1
  end
  return cp
end

local function gmatch_miss(p)
  local cp = prepare(p, false)
  if #p <= CACHED_LENGTH then
    if gmatch_count >= CACHE_LIMIT then
      gmatch_cache, gmatch_count = {}, 0
    end
    gmatch_cache[p] = cp
    gmatch_count = gmatch_count + 1
  end
  return cp
end

local function anchored_pattern(p)
  return anchored_cache[p] or anchored_miss(p)
end

local function gmatch_pattern(p)
  return gmatch_cache[p] or gmatch_miss(p)
end

-- -------------------------------------------------------------- arguments
local GLOBAL_NAME = {}

-- luaL_argerror, for a bad argument of the wrapper that called this.
local function argerror(arg, extramsg)
  local ar = getinfo(2, "nf")
  local name = ar.name
  if ar.namewhat == "method" then
    arg = arg - 1
    if arg == 0 then
      error(fmt("calling '%s' on bad self (%s)", name, extramsg), 3)
    end
  end
  if name == nil then
    name = GLOBAL_NAME[ar.func] or "?"
  end
  error(fmt("bad argument #%d to '%s' (%s)", arg, name, extramsg), 3)
end

-- luaL_typeerror's message.
local function type_message(expected, arg, nargs, value)
  local got
  if arg > nargs then
    got = "no value"
  else
    local mt = getmetatable_raw(value)
    local name = mt ~= nil and rawget(mt, "__name") or nil
    got = type(name) == "string" and name or type(value)
  end
  return expected .. " expected, got " .. got
end

-- luaL_checkinteger's message for a value that is not an integer.
local function integer_message(arg, nargs, value)
  if type(value) == "number" or (type(value) == "string" and tonumber(value) ~= nil) then
    return "number has no integer representation"
  end
  return type_message("number", arg, nargs, value)
end

-- posrelatI
local function position(pos, len)
  if pos > 0 then
    return pos
  elseif pos == 0 or pos < -len then
    return 1
  end
  return len + pos + 1
end

-- --------------------------------------------------------------- wrappers
-- Each wrapper starts with the common case: a cached pattern (so p is a
-- string), a string subject, default optional arguments, a subject short
-- enough for C. Everything else takes the general path below it.
local function find(...)
  local s, p, init, plain = ...
  local cp = anchored_cache[p]
  if cp and init == nil and not plain and type(s) == "string" and #s <= cp.nmax_fast then
    return c_find(...)
  end
  if type(s) ~= "string" then
    if type(s) ~= "number" then
      argerror(1, type_message("string", 1, select("#", ...), s))
    end
    s = tostring(s)
  end
  if type(p) ~= "string" then
    if type(p) ~= "number" then
      argerror(2, type_message("string", 2, select("#", ...), p))
    end
    p = tostring(p)
  end
  local ls, start = #s, 1
  if init ~= nil then
    local i = tointeger(init)
    if i == nil then
      argerror(3, integer_message(3, select("#", ...), init))
    end
    start = position(i, ls)
    if start > ls + 1 then
      return nil
    end
  end
  local n = ls - start + 1
  if plain or (#p > CACHED_LENGTH and cp == nil and no_specials(p)) then
    -- (a long literal needle is not compiled: C searches it plainly)
    if plain_cost(n, #p) <= BUDGET then
      return c_find(...)
    end
    return plain_find(s, p, start)
  end
  cp = anchored_cache[p] or anchored_miss(p)
  if cp.plain then
    if plain_cost(n, #p) <= BUDGET then
      return c_find(...)
    end
    return plain_find(s, p, start)
  end
  if n <= cp.nmax_find then
    return c_find(...)
  end
  return port_find(cp, s, start, true, cp.first, cp.window)
end

local function match(...)
  local s, p, init = ...
  local cp = anchored_cache[p]
  if cp and init == nil and type(s) == "string" and #s <= cp.nmax_find then
    return c_match(...)
  end
  if type(s) ~= "string" then
    if type(s) ~= "number" then
      argerror(1, type_message("string", 1, select("#", ...), s))
    end
    s = tostring(s)
  end
  if type(p) ~= "string" then
    if type(p) ~= "number" then
      argerror(2, type_message("string", 2, select("#", ...), p))
    end
    p = tostring(p)
  end
  local ls, start = #s, 1
  if init ~= nil then
    local i = tointeger(init)
    if i == nil then
      argerror(3, integer_message(3, select("#", ...), init))
    end
    start = position(i, ls)
    if start > ls + 1 then
      return nil
    end
  end
  cp = anchored_cache[p] or anchored_miss(p)
  if ls - start + 1 <= cp.nmax_find then
    return c_match(...)
  end
  return port_find(cp, s, start, false, cp.first, cp.window)
end

local function gmatch(...)
  local s, p, init = ...
  local cp = gmatch_cache[p]
  if cp and init == nil and type(s) == "string" and #s <= cp.nmax_gmatch then
    return c_gmatch(...)
  end
  if type(s) ~= "string" then
    if type(s) ~= "number" then
      argerror(1, type_message("string", 1, select("#", ...), s))
    end
    s = tostring(s)
  end
  if type(p) ~= "string" then
    if type(p) ~= "number" then
      argerror(2, type_message("string", 2, select("#", ...), p))
    end
    p = tostring(p)
  end
  local ls, start = #s, 1
  if init ~= nil then
    local i = tointeger(init)
    if i == nil then
      argerror(3, integer_message(3, select("#", ...), init))
    end
    start = position(i, ls)
    if start > ls + 1 then
      start = ls + 2
    end
  end
  cp = gmatch_cache[p] or gmatch_miss(p)
  if ls - start + 1 <= cp.nmax_gmatch then
    return c_gmatch(...)
  end
  return port_gmatch(cp, s, start, cp.first, cp.window)
end

local REPLACEMENT = { string = true, number = true, ["function"] = true, table = true }

-- The highest capture a replacement string refers to (%1-%9; 0 if none), or
-- false when it has an escape the C gsub refuses. Cached like patterns.
local repl_cache, repl_count = {}, 0
local function repl_captures(repl)
  local highest = repl_cache[repl]
  if highest ~= nil then
    return highest
  end
  highest = 0
  local from = 1
  while true do
    local at = c_find(repl, "%", from, true)
    if at == nil then
      break
    end
    local d = byte(repl, at + 1)
    if d ~= 37 and (d == nil or d < 48 or d > 57) then
      highest = false
      break
    elseif d ~= 37 and d - 48 > highest then
      highest = d - 48
    end
    from = at + 2
  end
  if #repl <= CACHED_LENGTH then
    if repl_count >= CACHE_LIMIT then
      repl_cache, repl_count = {}, 0
    end
    repl_cache[repl] = highest
    repl_count = repl_count + 1
  end
  return highest
end

-- add_value's error for a function's or table's value, raised at the line
-- that called gsub. Called (not tail-called) by the closures gsub hands to
-- the C gsub; levels: 1 this, 2 the closure, 3 the C gsub, 4 the wrapper
-- (a tail call from Lua to C keeps the Lua frame), 5 the caller.
local function bad_value(value)
  error("invalid replacement value (a " .. type(value) .. ")", 5)
end

local function gsub(...)
  local s, p, repl, max_s = ...
  local cp = anchored_cache[p]
  if cp and max_s == nil and type(s) == "string" and type(repl) == "string" then
    local ls = #s
    local highest = repl_cache[repl]
    if ls <= cp.nmax_gsub and highest ~= nil and highest ~= false
        and (highest <= cp.ncap or highest == 1)
        and (ls + 1.0) * (cp.ncap + 4 + 2 * #repl) <= BUDGET / 2 then
      return c_gsub(...)
    end
  end
  if type(s) ~= "string" then
    if type(s) ~= "number" then
      argerror(1, type_message("string", 1, select("#", ...), s))
    end
    s = tostring(s)
  end
  if type(p) ~= "string" then
    if type(p) ~= "number" then
      argerror(2, type_message("string", 2, select("#", ...), p))
    end
    p = tostring(p)
  end
  local tr = type(repl)
  local ls = #s
  local limit = ls + 1
  if max_s ~= nil then
    limit = tointeger(max_s)
    if limit == nil then
      argerror(4, integer_message(4, select("#", ...), max_s))
    end
  end
  if not REPLACEMENT[tr] then
    argerror(3, type_message("string/function/table", 3, select("#", ...), repl))
  end
  cp = anchored_cache[p] or anchored_miss(p)
  if tr == "number" then
    repl = tostring(repl)
    tr = "string"
  end
  local per_match = cp.ncap + 4
  local in_c = ls <= cp.nmax_gsub
  if tr == "string" then
    per_match = per_match + 2 * #repl
    if in_c then
      local highest = repl_captures(repl)
      in_c = highest and (highest <= cp.ncap or highest == 1)
    end
  end
  if in_c and (ls + 1.0) * per_match <= BUDGET / 2 then
    if tr == "string" then
      return c_gsub(...)
    elseif tr == "function" then
      local f = repl
      return c_gsub(s, p, function(...)
        local value = f(...)
        if value and type(value) ~= "string" and type(value) ~= "number" then
          bad_value(value)
        end
        return value
      end, max_s)
    end
    local t = repl
    return c_gsub(s, p, function(key)
      local value = t[key]
      if value and type(value) ~= "string" and type(value) ~= "number" then
        bad_value(value)
      end
      return value
    end, max_s)
  end
  return port_gsub(cp, s, repl, tr, limit, cp.first, cp.window)
end

GLOBAL_NAME[find], GLOBAL_NAME[match] = "string.find", "string.match"
GLOBAL_NAME[gmatch], GLOBAL_NAME[gsub] = "string.gmatch", "string.gsub"
string_lib.find, string_lib.match, string_lib.gmatch, string_lib.gsub = find, match, gmatch, gsub

-- For tests and the benchmark (the prelude does not pass this on to scripts).
return {
  budget = BUDGET,
  -- The step bound of one call of `fname` (one iterator call for gmatch;
  -- without the replacements for gsub) on a subject of length n.
  bound = function(fname, p, n)
    if fname == "gmatch" then
      return gmatch_pattern(p).cost_gmatch(n)
    end
    local cp = anchored_pattern(p)
    return fname == "gsub" and cp.cost_gsub(n) or cp.cost_find(n)
  end,
  -- The longest subject that `fname` with pattern p hands to C when called
  -- with two arguments (gsub: with a replacement string of length `rlen`,
  -- or a function or table when rlen is nil), as the wrappers decide it.
  threshold = function(fname, p, rlen)
    if fname == "gmatch" then
      return gmatch_pattern(p).nmax_gmatch
    end
    local cp = anchored_pattern(p)
    if fname == "find" then
      return cp.nmax_fast
    elseif fname == "match" then
      return cp.nmax_find
    end
    local per_match = cp.ncap + 4 + 2 * (rlen or 0)
    local by_replacement = tointeger((BUDGET / 2) // per_match - 1)
    return by_replacement < cp.nmax_gsub and by_replacement or cp.nmax_gsub
  end,
}
