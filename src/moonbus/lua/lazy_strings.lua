-- moonbus sandbox: the bounded pattern functions, loaded on first use.
--
-- Why: the pattern chunks (pboundary, pcompile, pmatch, pcost, patterns) hold about
-- 50 KiB in every Lua state, and most scripts of a game with thousands of
-- them (a `tick` handler each) never match a pattern. Until a state first
-- reaches one of LAZY below, it carries none of that.
--
-- How: the C functions string.find / match / gmatch / gsub leave the real
-- string library now, before anything else can capture them (the prelude
-- runs next). A metatable on the real library (reached by `s:find(...)`
-- through the string metatable) and on every environment's copy of it
-- (`copy_string`, used by the prelude's make_env) loads the pattern chunks
-- when one of LAZY is first read: the chunks wrap the C functions in a
-- private copy of the library, the string helpers are made with the wrapped
-- find, and the functions go into the table that was read. The script then
-- calls the wrapper itself: no extra frame, so error levels and names are
-- those of an eager load. Scripts can never reach the C functions: they were
-- removed before the prelude ran, and the private copy is an upvalue here.
--
-- An abort (time limit) or "not enough memory" during the load leaves no
-- half state: `loaded` is set in one assignment after everything was made,
-- and until then every read of a LAZY name loads again. The load runs in the
-- call that first reads the name, under that call's limits.
--
-- Visible differences until the first read, in a script's environment:
-- `rawget(string, "find")` and `next(string, ...)` do not see the LAZY names
-- (`pairs(string)` does: __pairs loads first), and getmetatable(string) is
-- false (protected) instead of nil.
--
-- Runs once per state after bounded.lua, before the prelude, with the full
-- standard library; `...` is a function returning the stripped pattern chunks
-- (sandbox.PATTERN_CHUNKS, in load order: the factory's bytecode, fetched
-- only when needed so that no state keeps a copy of it), or nothing when the
-- memory limit leaves no room for them (lazy_strings.py). Returns the table
-- the prelude uses.

local fetch = ...

local real_load, setmetatable, rawset, pairs, next, tostring, error =
  load, setmetatable, rawset, pairs, next, tostring, error

local string_lib = string
local LAZY = {
  find = true, match = true, gmatch = true, gsub = true,
  contains = true, trim = true, split = true,
}

-- The environment the pattern chunks load in: the standard globals, with a
-- private string library that still has the C functions for them to wrap.
local private_string = {}
for k, v in pairs(string_lib) do
  private_string[k] = v
end
private_string.dump = nil
local chunk_env = {}
for k, v in pairs(_G) do
  chunk_env[k] = v
end
chunk_env.string = private_string
chunk_env._G = chunk_env

local c_find = string_lib.find
for name in pairs(LAZY) do
  string_lib[name] = nil
end

-- The string helpers (SPEC §4 "string helpers") that need the wrapped find.
local function helpers(find, sub, reverse)
  local h = {}
  function h.contains(s, x)
    return find(s, x, 1, true) ~= nil
  end
  -- Linear time (the pattern "^%s*(.-)%s*$" is quadratic on long runs of
  -- spaces); same result, and non-strings are refused by find as by gsub.
  function h.trim(s)
    local first = find(s, "%S")
    if first == nil then
      return ""
    end
    s = tostring(s)
    return sub(s, first, #s + 1 - find(reverse(s), "%S"))
  end
  function h.split(s, sep)
    sep = sep or ","
    if sep == "" then
      error("split: separator must not be empty", 2)
    end
    local out, start = {}, 1
    while true do
      local i, j = find(s, sep, start, true)
      if not i then
        out[#out + 1] = sub(s, start)
        return out
      end
      out[#out + 1] = sub(s, start, i - 1)
      start = j + 1
    end
  end
  return h
end

local loaded = nil  -- name -> function, once the chunks have run

-- A load failure (only "not enough memory" for these trusted chunks) is
-- raised as the message itself, as Lua raises it: the host reads it as such.
local MEMORY_ERROR <const> = "not enough memory"
local function run(code, name, ...)
  local chunk, err = real_load(code, name, "b", chunk_env)
  if chunk == nil then
    error(err, 0)
  end
  return chunk(...)
end

local function load_all()
  if loaded ~= nil then
    return loaded
  end
  local edges, compiler, matcher, cost, patterns = fetch()
  if edges == nil then  -- no room under the memory limit (lazy_strings.py)
    error(MEMORY_ERROR, 0)
  end
  local port = run(matcher, "=pmatch.lua", run(compiler, "=pcompile.lua"), run(edges, "=pboundary.lua"))
  local bound = run(cost, "=pcost.lua", port)
  run(patterns, "=patterns.lua", port, bound)
  local made = helpers(private_string.find, private_string.sub, private_string.reverse)
  local fns = {}
  for name in pairs(LAZY) do
    fns[name] = private_string[name] or made[name]
  end
  loaded = fns
  for name, f in pairs(fns) do
    rawset(string_lib, name, f)
  end
  return fns
end

-- The metatable of environment copies: a LAZY name loads and fills the copy.
local function fill(t)
  local fns = load_all()
  for name, f in pairs(fns) do
    rawset(t, name, f)
  end
  return fns
end
local copy_mt = {
  __index = function(t, k)
    if LAZY[k] then
      return fill(t)[k]
    end
    return nil
  end,
  __pairs = function(t)
    fill(t)
    return next, t, nil
  end,
  __metatable = false,
}

setmetatable(string_lib, {
  __index = function(_, k)
    if LAZY[k] then
      return load_all()[k]
    end
    return nil
  end,
  __metatable = false,
})

-- A copy of the string library for a new environment: plain once loaded.
local function copy_string()
  local r = {}
  for k, v in pairs(string_lib) do
    r[k] = v
  end
  if loaded == nil then
    setmetatable(r, copy_mt)
  end
  return r
end

return {
  copy_string = copy_string,
  c_find = c_find,  -- for plain searches of one character (memchr): chunk names
  load = load_all,
}
