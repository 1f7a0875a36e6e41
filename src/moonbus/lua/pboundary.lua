-- moonbus sandbox: where the Lua port of the pattern matcher meets C.
--
-- The port (pmatch.lua) stands in for C functions, so at its edges it does
-- what a C function does, and uses C where C is provably quick:
--   * errors are raised at the level of the script line that called
--     find/match/gsub (or the gmatch iterator), as a C function's are
--     (`raise`, over the entry points registered in ENTRY);
--   * a gsub callback or __index runs behind a C call boundary, so it cannot
--     yield, exactly as under the C gsub (`call_in_c`);
--   * the scan over start positions jumps ahead with C searches of bounded
--     slices (`next_candidate`).
-- Kept apart from the matcher because none of it touches a match's state.
--
-- Threads: runs inside one Lua state, used by one thread at a time.
--
-- Runs once per state, before pmatch.lua, with the full standard library.
-- Returns the table pmatch.lua takes as its second argument.

local char, sub = string.char, string.sub
local c_find, c_gsub = string.find, string.gsub
local unpack = table.unpack
local type, error, setmetatable = type, error, setmetatable
local getinfo = debug.getinfo

-- Pattern errors read as the C function's: "file:line: message" at the line
-- that called find/match/gsub (or the gmatch iterator). The matcher's entry
-- points are registered in ENTRY; an error walks up to the nearest one and is
-- raised at its caller's level (entries are tail-called by patterns.lua's
-- wrappers, so their caller is the script).
local ENTRY = setmetatable({}, { __mode = "k" })

local function raise(msg)
  local level = 2
  while true do
    local info = getinfo(level, "f")
    if info == nil then
      error(msg, 0)
    end
    if ENTRY[info.func] then
      error(msg, level + 1)
    end
    level = level + 1
  end
end

-- `return pass(f())` instead of `return f()` in entry points: f may raise,
-- and a tail call would remove the entry's frame that `raise` looks for.
local function pass(...)
  return ...
end

-- First start >= s1 in s whose item `first` (a literal byte or a set) can match,
-- or nil: lets the scan over start positions skip in C. The C calls work on
-- slices of at most `window` bytes, so each one is short.
local function next_candidate(s, first, s1, window)
  local slen = #s
  local span = 64
  while s1 <= slen do
    local last = s1 + span - 1
    if last > slen then
      last = slen
    end
    local piece = sub(s, s1, last)
    local at
    if type(first) == "number" then
      at = c_find(piece, char(first), 1, true)
    else
      at = c_find(piece, first)
    end
    if at then
      return s1 + at - 1
    end
    s1 = last + 1
    if span < window then
      span = span * 2
    end
  end
  return nil
end

-- User functions and __index run as the C gsub runs them: behind a C call
-- boundary (lua_call), so they cannot yield, exactly as with the C gsub.
local pending = nil
local returned = nil
local function trampoline()
  local call = pending
  pending = nil
  returned = call[1](unpack(call, 3, call[2] + 2))
end
local function call_in_c(f, n, ...)
  pending = { f, n, ... }
  c_gsub("x", "x", trampoline)
  local value = returned
  returned = nil
  return value
end
local function index(t, key)
  return t[key]
end

return {
  ENTRY = ENTRY, raise = raise, pass = pass, call_in_c = call_in_c, index = index,
  next_candidate = next_candidate,
}
