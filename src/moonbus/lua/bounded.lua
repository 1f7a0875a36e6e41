-- moonbus sandbox: library functions whose C loops the time limit cannot stop.
--
-- The time limit arms a Lua count hook, and hooks run only between Lua
-- instructions. A C library function that loops without calling back into
-- Lua never reaches one. Most C loops are bounded by the memory budget,
-- because they build a string or a table as they go. The ones below are not,
-- so this chunk wraps them in place in the real libraries. It runs once in
-- every fresh state, before the prelude copies the libraries into sandbox
-- environments. String methods such as ("x"):rep(n) also get the wrappers.
--
-- * string.rep(s, n) loops n times even when s and the separator are empty
--   and nothing is copied: the result is "" whatever n is.
-- * table.insert / remove / sort / concat loop up to #t, and a __len
--   metamethod can claim any length: for tables with a metatable they run in
--   Lua (sort and concat on a plain copy), where the time limit applies.
--   Plain tables keep the C versions; their length is their real size.
-- * table.move loops over the range it is given: ranges longer than
--   MOVE_CHUNK are moved in chunks, with Lua instructions in between.
--
-- Not here: the C pattern matcher (string.find / match / gmatch / gsub)
-- backtracks without bound; patterns.lua (run next) wraps those.
--
-- Errors: the wrappers call the C functions through pcall and re-raise their
-- argument errors at the script's line, so messages and ScriptError.where
-- read as if the script had called the C function itself.

local LOADED = package.loaded
local type, error, pcall, select, tonumber, getmetatable, setmetatable =
  type, error, pcall, select, tonumber, getmetatable, setmetatable
local fmt, find = string.format, string.find
local tointeger, ult, maxinteger = math.tointeger, math.ult, math.maxinteger

local MEMORY_ERROR = "not enough memory"
local MOVE_CHUNK = 4096

-- Lua names a C function called from C (here: from pcall) by looking for it
-- in package.loaded; registering the original under its usual name keeps
-- "bad argument #1 to 'table.insert'" in messages. Scripts cannot reach it.
local function original(name, f)
  LOADED[name] = f
  return f
end

-- Re-raise an error of a wrapped C function. Its own errors carry no position
-- yet: they get the script's line (level 3 = the caller of the wrapper that
-- called fail). Errors from Lua code (a metamethod, a comparator, the time
-- limit), non-string errors and "not enough memory" pass through unchanged.
local function fail(err)
  if type(err) == "string" and err ~= MEMORY_ERROR and not find(err, "^[^\n]-:%d+: ") then
    error(err, 3)
  end
  error(err, 0)
end

-- #t through __len, as luaL_len does it (level 3: the wrapper's caller).
local function length(t)
  local n = tointeger(#t)
  if n == nil then
    error("object length is not an integer", 3)
  end
  return n
end

-- luaL_checkinteger for the Lua versions below.
local function arg_integer(v, arg, name)
  local i = tointeger(v)
  if i ~= nil then
    return i
  end
  local why
  if tonumber(v) ~= nil then
    why = "number has no integer representation"
  else
    why = "number expected, got " .. type(v)
  end
  error(fmt("bad argument #%d to '%s' (%s)", arg, name, why), 3)
end

local function plain(t)
  return type(t) ~= "table" or getmetatable(t) == nil
end

local string_rep = original("string.rep", string.rep)
function string.rep(s, n, ...)
  if s == "" then
    local sep = ...
    local count = tointeger(n)
    if (sep == nil or sep == "") and count ~= nil and count > 1 then
      n = 1
    end
  end
  local ok, result = pcall(string_rep, s, n, ...)
  if ok then
    return result
  end
  fail(result)
end

local table_insert = original("table.insert", table.insert)
function table.insert(t, ...)
  if plain(t) then
    local ok, err = pcall(table_insert, t, ...)
    if not ok then
      fail(err)
    end
    return
  end
  local e = length(t) + 1
  local nargs = select("#", ...)
  if nargs == 1 then
    t[e] = ...
    return
  elseif nargs ~= 2 then
    error("wrong number of arguments to 'insert'", 2)
  end
  local pos, value = ...
  pos = arg_integer(pos, 2, "table.insert")
  if not ult(pos - 1, e) then
    error("bad argument #2 to 'table.insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = value
end

local table_remove = original("table.remove", table.remove)
function table.remove(t, ...)
  if plain(t) then
    local ok, result = pcall(table_remove, t, ...)
    if ok then
      return result
    end
    fail(result)
  end
  local size = length(t)
  local pos = ...
  if pos == nil then
    pos = size
  else
    pos = arg_integer(pos, 2, "table.remove")
  end
  if pos ~= size and ult(size, pos - 1) then
    error("bad argument #2 to 'table.remove' (position out of bounds)", 2)
  end
  local value = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return value
end

local table_sort = original("table.sort", table.sort)
function table.sort(t, ...)
  if plain(t) then
    local ok, err = pcall(table_sort, t, ...)
    if not ok then
      fail(err)
    end
    return
  end
  local n = length(t)
  if n <= 1 then
    return
  end
  if n >= 0x7fffffff then
    error("bad argument #1 to 'table.sort' (array too big)", 2)
  end
  local comp = ...
  if comp ~= nil and type(comp) ~= "function" then
    error("bad argument #2 to 'table.sort' (function expected, got " .. type(comp) .. ")", 2)
  end
  -- A plain copy that reports the same length (it may hold nils, as t may).
  local copy = setmetatable({}, { __len = function() return n end })
  for i = 1, n do
    copy[i] = t[i]
  end
  local ok, err = pcall(table_sort, copy, comp)
  if not ok then
    fail(err)
  end
  for i = 1, n do
    t[i] = copy[i]
  end
end

local table_concat = original("table.concat", table.concat)
function table.concat(t, ...)
  if plain(t) then
    local ok, result = pcall(table_concat, t, ...)
    if ok then
      return result
    end
    fail(result)
  end
  local last = length(t)
  local sep, i, j = ...
  if sep == nil then
    sep = ""
  elseif type(sep) ~= "string" and type(sep) ~= "number" then
    error("bad argument #2 to 'table.concat' (string expected, got " .. type(sep) .. ")", 2)
  end
  i = i == nil and 1 or arg_integer(i, 3, "table.concat")
  j = j == nil and last or arg_integer(j, 4, "table.concat")
  local parts, k = {}, 0
  for index = i, j do
    local v = t[index]
    if type(v) ~= "string" and type(v) ~= "number" then
      error(fmt("invalid value (%s) at index %d in table for 'concat'", type(v), index), 2)
    end
    k = k + 1
    parts[k] = v
  end
  local ok, result = pcall(table_concat, parts, sep)
  if ok then
    return result
  end
  fail(result)
end

local table_move = original("table.move", table.move)
function table.move(a1, f, e, t, a2)
  local fi, ei, ti = tointeger(f), tointeger(e), tointeger(t)
  if fi == nil or ei == nil or ti == nil or ei < fi or ei - fi < MOVE_CHUNK
    or (fi <= 0 and ei >= maxinteger + fi) or ti > maxinteger - (ei - fi) then
    -- Short, empty or invalid: one C call, which checks every argument.
    local ok, result = pcall(table_move, a1, f, e, t, a2)
    if ok then
      return result
    end
    fail(result)
  end
  local last = ei - fi
  local dest = a2
  if dest == nil then
    dest = a1
  end
  -- Same order as the C loop: forwards unless the ranges overlap in one table
  -- with the destination after the source. Each chunk is moved by the C
  -- function, which picks the direction inside the chunk.
  if ti > ei or ti <= fi or (a2 ~= nil and a1 ~= a2) then
    local lo = 0
    while true do
      local hi = last - lo < MOVE_CHUNK and last or lo + MOVE_CHUNK - 1
      local ok, err = pcall(table_move, a1, fi + lo, fi + hi, ti + lo, dest)
      if not ok then
        fail(err)
      end
      if hi == last then
        break
      end
      lo = hi + 1
    end
  else
    local hi = last
    while true do
      local lo = hi < MOVE_CHUNK and 0 or hi - MOVE_CHUNK + 1
      local ok, err = pcall(table_move, a1, fi + lo, fi + hi, ti + lo, dest)
      if not ok then
        fail(err)
      end
      if lo == 0 then
        break
      end
      hi = lo - 1
    end
  end
  return dest
end
