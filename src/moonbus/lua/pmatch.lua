-- moonbus sandbox: Lua 5.4's pattern matcher (lstrlib.c) ported to Lua.
--
-- Why: the C matcher backtracks without bound and a C function never reaches
-- the time limit's hook (see engine.py), so `("a"):rep(4e4):find(".-.-b")`
-- would hold the engine's thread for minutes. This port runs as ordinary Lua
-- code, which the hook interrupts like any other. patterns.lua decides, per
-- call, whether the C function is provably quick or this port must run.
--
-- Fidelity: the port follows lstrlib.c step by step (same recursion points,
-- same MAXCCALLS depth for "pattern too complex", same lazy errors: a
-- malformed item raises only when the matcher reaches it, with the same
-- message), so results and errors are those of the C functions. It matches
-- the items pcompile.lua compiled a pattern into; its edges with C (errors
-- at the caller's line, callbacks behind a C call, scanning ahead with C
-- find) are pboundary.lua.
--
-- Threads: runs inside one Lua state, used by one thread at a time. Matching
-- state lives in upvalues that every match attempt sets afresh, so nested use
-- (a gsub callback that calls find) is safe; nothing of a match is kept
-- across a call into user code.
--
-- Runs once per state, before the prelude, with the full standard library;
-- `...` is the tables pcompile.lua and pboundary.lua return. Returns the
-- port's entry points to pcost.lua and patterns.lua.

local items, boundary = ...
local byte, sub, c_find, concat = string.byte, string.sub, string.find, table.concat
local type, tostring, rawget, pairs, assert = type, tostring, rawget, pairs, assert
local getmetatable_raw = debug.getmetatable
local ENTRY, raise, pass = boundary.ENTRY, boundary.raise, boundary.pass
local call_in_c, index, next_candidate = boundary.call_in_c, boundary.index, boundary.next_candidate

-- <const>: compile-time constants, no upvalues. The item kinds and quantifiers
-- are pcompile.lua's numbers, checked once, at load.
local MAXCCALLS <const>, MAXCAPTURES <const> = 200, 32
local CAP_UNFINISHED <const>, CAP_POSITION <const> = -1, -2
local B_PERCENT <const>, B_0 <const>, B_9 <const> = 37, 48, 57
local K_END <const>, K_CHAR <const>, K_ANY <const>, K_SET <const> = 0, 1, 2, 3
local K_OPEN <const>, K_POS <const>, K_CLOSE <const>, K_DOLLAR <const> = 4, 5, 6, 7
local K_BALANCE <const>, K_FRONTIER <const>, K_BACKREF <const>, K_ERROR <const> = 8, 9, 10, 11
local Q_ONE <const>, Q_OPT <const>, Q_STAR <const>, Q_PLUS <const>, Q_MIN <const> = 0, 1, 2, 3, 4
local kinds, quantifiers = items.kinds, items.quantifiers
for names, numbers in pairs({ [kinds] = { END = K_END, CHAR = K_CHAR, ANY = K_ANY, SET = K_SET,
    OPEN = K_OPEN, POS = K_POS, CLOSE = K_CLOSE, DOLLAR = K_DOLLAR, BALANCE = K_BALANCE,
    FRONTIER = K_FRONTIER, BACKREF = K_BACKREF, ERROR = K_ERROR },
  [quantifiers] = { ONE = Q_ONE, OPT = Q_OPT, STAR = Q_STAR, PLUS = Q_PLUS, MIN = Q_MIN } }) do
  for name, number in pairs(numbers) do
    assert(names[name] == number, "pmatch.lua and pcompile.lua number items differently")
  end
end

-- ----------------------------------------------------------------- matcher
-- State of the match attempt in progress (lstrlib's MatchState).
local S, SLEN = "", 0
local K, A, Q, W = nil, nil, nil, nil
-- Steps taken, in the unit of patterns.lua's cost bound (tests compare the
-- two: the port takes the same steps as the C matcher).
local STEPS = 0
local LEVEL, DEPTH = 0, MAXCCALLS
local CI, CL = {}, {}  -- capture start index and length (or CAP_*)

local function session(cp, s)
  S, SLEN = s, #s
  K, A, Q, W = cp.K, cp.A, cp.Q, cp.C
end

local function single(s, i)
  STEPS = STEPS + W[i]
  if s > SLEN then
    return false
  end
  local k = K[i]
  if k == K_CHAR then
    return byte(S, s) == A[i]
  elseif k == K_ANY then
    return true
  end
  return A[i][byte(S, s)] == true
end

local do_match

local function max_expand(s, i)
  -- Count the repetitions: single(s + n, i) until it fails, inlined.
  local k, arg = K[i], A[i]
  local n = 0
  if k == K_ANY then
    if s <= SLEN then
      n = SLEN - s + 1
    end
  elseif k == K_CHAR then
    while s + n <= SLEN and byte(S, s + n) == arg do
      n = n + 1
    end
  else
    while s + n <= SLEN and arg[byte(S, s + n)] do
      n = n + 1
    end
  end
  STEPS = STEPS + W[i] * (n + 1)
  while n >= 0 do
    local r = do_match(s + n, i + 1)
    if r then
      return r
    end
    n = n - 1
  end
  return nil
end

local function min_expand(s, i)
  while true do
    local r = do_match(s, i + 1)
    if r then
      return r
    elseif single(s, i) then
      s = s + 1
    else
      return nil
    end
  end
end

local function start_capture(s, i, what)
  local level = LEVEL
  if level >= MAXCAPTURES then
    raise("too many captures")
  end
  level = level + 1
  CI[level], CL[level] = s, what
  LEVEL = level
  local r = do_match(s, i)
  if r == nil then
    LEVEL = LEVEL - 1
  end
  return r
end

local function end_capture(s, i)
  local l = LEVEL
  while l >= 1 and CL[l] ~= CAP_UNFINISHED do
    l = l - 1
  end
  if l < 1 then
    raise("invalid pattern capture")
  end
  CL[l] = s - CI[l]
  local r = do_match(s, i)
  if r == nil then
    CL[l] = CAP_UNFINISHED
  end
  return r
end

local function match_capture(s, l)
  if l < 1 or l > LEVEL or CL[l] == CAP_UNFINISHED then
    raise("invalid capture index %" .. l)
  end
  local len = CL[l]
  STEPS = STEPS + 1
  if len == CAP_POSITION or SLEN - s + 1 < len then
    return nil
  end
  STEPS = STEPS + len
  local init = CI[l]
  if len == 0 or sub(S, init, init + len - 1) == sub(S, s, s + len - 1) then
    return s + len
  end
  return nil
end

local function match_balance(s, pair)
  STEPS = STEPS + 1
  if s > SLEN then
    return nil
  end
  local b, e = pair // 256, pair % 256
  if byte(S, s) ~= b then
    return nil
  end
  local cont = 1
  s = s + 1
  while s <= SLEN do
    STEPS = STEPS + 1
    local c = byte(S, s)
    if c == e then
      cont = cont - 1
      if cont == 0 then
        return s + 1
      end
    elseif c == b then
      cont = cont + 1
    end
    s = s + 1
  end
  return nil
end

-- match(ms, s, p): s and the result are subject indexes (SLEN + 1 is the
-- end), i is the item index; nil when there is no match.
do_match = function(s, i)
  if DEPTH == 0 then
    raise("pattern too complex")
  end
  DEPTH = DEPTH - 1
  STEPS = STEPS + 1
  while true do
    local k = K[i]
    if k == K_END then
      break
    elseif k <= K_SET then
      local q = Q[i]
      if not single(s, i) then
        if q == Q_STAR or q == Q_OPT or q == Q_MIN then
          i = i + 1
        else
          s = nil
          break
        end
      elseif q == Q_ONE then
        s = s + 1
        i = i + 1
      elseif q == Q_OPT then
        local r = do_match(s + 1, i + 1)
        if r then
          s = r
          break
        end
        i = i + 1
      elseif q == Q_PLUS then
        s = max_expand(s + 1, i)
        break
      elseif q == Q_STAR then
        s = max_expand(s, i)
        break
      else
        s = min_expand(s, i)
        break
      end
    elseif k == K_OPEN then
      STEPS = STEPS + W[i]
      s = start_capture(s, i + 1, CAP_UNFINISHED)
      break
    elseif k == K_POS then
      STEPS = STEPS + W[i]
      s = start_capture(s, i + 1, CAP_POSITION)
      break
    elseif k == K_CLOSE then
      STEPS = STEPS + W[i]
      s = end_capture(s, i + 1)
      break
    elseif k == K_DOLLAR then
      STEPS = STEPS + 1
      if s ~= SLEN + 1 then
        s = nil
      end
      break
    elseif k == K_BALANCE then
      s = match_balance(s, A[i])
      if s == nil then
        break
      end
      i = i + 1
    elseif k == K_FRONTIER then
      STEPS = STEPS + W[i]
      local set = A[i]
      local previous = s == 1 and 0 or byte(S, s - 1)
      local current = s <= SLEN and byte(S, s) or 0
      if set[previous] or not set[current] then
        s = nil
        break
      end
      i = i + 1
    elseif k == K_BACKREF then
      s = match_capture(s, A[i])
      if s == nil then
        break
      end
      i = i + 1
    else
      raise(A[i])
    end
  end
  DEPTH = DEPTH + 1
  return s
end

-- A new match attempt at s (reprepstate).
local function attempt(s)
  LEVEL, DEPTH = 0, MAXCCALLS
  return do_match(s, 1)
end

-- get_onecapture / push_onecapture; i is 1-based.
local function capture(i, s, e)
  if i > LEVEL then
    if i ~= 1 then
      raise("invalid capture index %" .. i)
    end
    STEPS = STEPS + 1 + e - s
    return sub(S, s, e - 1)
  end
  local len = CL[i]
  if len == CAP_UNFINISHED then
    raise("unfinished capture")
  elseif len == CAP_POSITION then
    STEPS = STEPS + 1
    return CI[i]
  end
  STEPS = STEPS + 1 + len
  return sub(S, CI[i], CI[i] + len - 1)
end

local function captures_from(i, last, s, e)
  if i > last then
    return
  end
  return capture(i, s, e), captures_from(i + 1, last, s, e)
end

-- push_captures: with whole = false (find) and no captures, nothing.
local function push_captures(s, e, whole)
  local n = LEVEL
  if n == 0 and whole then
    n = 1
  end
  return captures_from(1, n, s, e)
end

-- --------------------------------------------------------- entry points
-- All arguments are already checked and converted by patterns.lua:
-- s and cp.pattern are strings, init is a 1-based start within 1..#s+1.

-- str_find_aux. `first`/`window`: optional candidate filter (see patterns.lua).
local function find_aux(cp, s, init, find, first, window)
  session(cp, s)
  local s1 = init
  local anchor = cp.anchor
  while true do
    if first and not anchor then
      s1 = next_candidate(s, first, s1, window)
      if s1 == nil then
        return nil
      end
    end
    local e = attempt(s1)
    if e then
      if find then
        return s1, e - 1, push_captures(s1, e, false)
      end
      return pass(push_captures(s1, e, true))
    end
    s1 = s1 + 1
    if anchor or s1 > SLEN + 1 then
      return nil
    end
  end
end
ENTRY[find_aux] = true

-- gmatch: an iterator like gmatch_aux (a failed call does not advance).
local function gmatch_aux(cp, s, init, first, window)
  local src, lastmatch = init, nil
  local function iterate()
    session(cp, s)
    local s1 = src
    while s1 <= SLEN + 1 do
      if first then
        s1 = next_candidate(s, first, s1, window)
        if s1 == nil then
          return
        end
      end
      local e = attempt(s1)
      if e and e ~= lastmatch then
        src, lastmatch = e, e
        return pass(push_captures(s1, e, true))
      end
      s1 = s1 + 1
    end
  end
  ENTRY[iterate] = true
  return iterate
end

-- add_s: the replacement string, with %0-%9 and %%.
local function add_string(out, no, repl, s, e)
  local from = 1
  while true do
    local at = c_find(repl, "%", from, true)
    if at == nil then
      break
    end
    if at > from then
      no = no + 1
      out[no] = sub(repl, from, at - 1)
    end
    local d = byte(repl, at + 1)
    no = no + 1
    if d == B_PERCENT then
      out[no] = "%"
    elseif d == B_0 then
      out[no] = sub(S, s, e - 1)
    elseif d ~= nil and d > B_0 and d <= B_9 then
      out[no] = tostring(capture(d - B_0, s, e))
    else
      raise("invalid use of '%' in replacement string")
    end
    from = at + 2
  end
  if from <= #repl then
    no = no + 1
    out[no] = sub(repl, from)
  end
  return no
end

-- str_gsub. tr is type(repl); numbers were converted to strings.
local function gsub_aux(cp, s, repl, tr, max_s, first, window)
  local src, lastmatch = 1, nil
  local n, changed = 0, false
  local out, no = {}, 0
  local copied = 1  -- s[copied .. src - 1] is still to be copied to out
  local anchor = cp.anchor
  local slen = #s
  session(cp, s)
  while n < max_s do
    if first and not anchor then
      local at = next_candidate(s, first, src, window)
      if at == nil then
        break
      end
      src = at
    end
    local e = attempt(src)
    if e and e ~= lastmatch then
      n = n + 1
      if src > copied then
        no = no + 1
        out[no] = sub(s, copied, src - 1)
      end
      if tr == "string" then
        no = add_string(out, no, repl, src, e)
        changed = true
      else
        local value
        if tr == "function" then
          local last = LEVEL == 0 and 1 or LEVEL
          value = call_in_c(repl, last, push_captures(src, e, true))
        else
          local key = capture(1, src, e)
          if getmetatable_raw(repl) == nil then
            value = rawget(repl, key)
          else
            value = call_in_c(index, 2, repl, key)
          end
        end
        no = no + 1
        if not value then
          out[no] = sub(s, src, e - 1)
        elseif type(value) == "string" or type(value) == "number" then
          out[no] = tostring(value)
          changed = true
        else
          raise("invalid replacement value (a " .. type(value) .. ")")
        end
        session(cp, s)  -- the callback may have matched other patterns
      end
      src, lastmatch, copied = e, e, e
    elseif src <= slen then
      src = src + 1
    else
      break
    end
    if anchor then
      break
    end
  end
  if not changed then
    return s, n
  end
  if copied <= slen then
    no = no + 1
    out[no] = sub(s, copied)
  end
  return concat(out, "", 1, no), n
end
ENTRY[gsub_aux] = true

return {
  steps = function()
    return STEPS
  end,
  compile = items.compile,
  find = find_aux,
  gmatch = gmatch_aux,
  gsub = gsub_aux,
  kinds = kinds,
  quantifiers = quantifiers,
}
