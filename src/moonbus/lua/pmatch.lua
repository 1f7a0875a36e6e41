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
-- message), so results and errors are those of the C functions. The pattern
-- is compiled first into items (K kind, A argument, Q quantifier, C cost),
-- stopping at the first malformed item, which becomes an error item; an item
-- is parsed the same way wherever the matcher reaches it, so this changes
-- nothing observable. C[i] is the item's weight in patterns.lua's cost
-- bound: 2 for a single character or class, its length + 1 for a [set],
-- 3 for a capture item, 1 otherwise. Character classes are read from the C matcher itself,
-- so %a and friends follow the same C locale.
--
-- Threads: runs inside one Lua state, used by one thread at a time. Matching
-- state lives in upvalues that every match attempt sets afresh, so nested use
-- (a gsub callback that calls find) is safe; nothing of a match is kept
-- across a call into user code.
--
-- Runs once per state, before the prelude, with the full standard library.
-- Returns the port's entry points to patterns.lua.

local byte, char, sub, fmt = string.byte, string.char, string.sub, string.format
local c_find, c_gmatch, c_gsub = string.find, string.gmatch, string.gsub
local concat, unpack = table.concat, table.unpack
local type, error, tostring, setmetatable, rawget = type, error, tostring, setmetatable, rawget
local getinfo, getmetatable_raw = debug.getinfo, debug.getmetatable

local MAXCCALLS = 200
local MAXCAPTURES = 32
local CAP_UNFINISHED, CAP_POSITION = -1, -2

-- Item kinds. A single-character item (CHAR, ANY, SET) carries a quantifier.
local K_END, K_CHAR, K_ANY, K_SET, K_OPEN, K_POS, K_CLOSE = 0, 1, 2, 3, 4, 5, 6
local K_DOLLAR, K_BALANCE, K_FRONTIER, K_BACKREF, K_ERROR = 7, 8, 9, 10, 11
local Q_ONE, Q_OPT, Q_STAR, Q_PLUS, Q_MIN = 0, 1, 2, 3, 4

local B_PERCENT, B_OPEN, B_CLOSE, B_LBRACKET, B_RBRACKET = 37, 40, 41, 91, 93
local B_CARET, B_DOLLAR, B_DOT, B_DASH = 94, 36, 46, 45
local B_b, B_f, B_0, B_9 = 98, 102, 48, 57
local QUANTIFIER = { [63] = Q_OPT, [42] = Q_STAR, [43] = Q_PLUS, [45] = Q_MIN }

local ALL_BYTES
do
  local codes = {}
  for i = 0, 255 do
    codes[i + 1] = i
  end
  ALL_BYTES = char(unpack(codes))
end

-- Members of a class, as the C matcher sees them: {[byte] = true}.
local function members(spec)
  local set = {}
  for ch in c_gmatch(ALL_BYTES, spec) do
    set[byte(ch)] = true
  end
  return set
end

-- %a %c %d %g %l %p %s %u %w %x %z and their complements, built on first use.
local CLASS_LETTERS = {}
for letter in c_gmatch("acdglpsuwxz", ".") do
  CLASS_LETTERS[byte(letter)] = true
  CLASS_LETTERS[byte(letter:upper())] = true
end
local class_sets = {}
local function class_set(letter)
  local set = class_sets[letter]
  if set == nil and CLASS_LETTERS[letter] then
    set = members("%" .. char(letter))
    class_sets[letter] = set
  end
  return set
end

-- matchbracketclass, read from the pattern text (used for long sets).
local function bracket_has(p, c, open, close)
  local sig = true
  local i = open
  if byte(p, i + 1) == B_CARET then
    sig = false
    i = i + 1
  end
  i = i + 1
  while i < close do
    local d = byte(p, i)
    if d == B_PERCENT then
      i = i + 1
      local letter = byte(p, i)
      local set = class_set(letter)
      if set then
        if set[c] then
          return sig
        end
      elseif letter == c then
        return sig
      end
    elseif byte(p, i + 1) == B_DASH and i + 2 < close then
      if d <= c and c <= byte(p, i + 2) then
        return sig
      end
      i = i + 2
    elseif d == c then
      return sig
    end
    i = i + 1
  end
  return not sig
end

-- Bracket sets by their text ("[%w_]"), shared by all patterns of the state.
local SET_CACHE_LIMIT = 256
local LONG_SET = 256
local set_cache, set_count = {}, 0
local function bracket_set(p, open, close)
  local spec = sub(p, open, close)
  local set = set_cache[spec]
  if set then
    return set
  end
  if close - open <= LONG_SET then
    set = members(spec)  -- at most 256 * LONG_SET steps of C
  else
    set = {}
    for c = 0, 255 do
      if bracket_has(p, c, open, close) then
        set[c] = true
      end
    end
  end
  if set_count >= SET_CACHE_LIMIT then
    set_cache, set_count = {}, 0
  end
  set_cache[spec] = set
  set_count = set_count + 1
  return set
end

-- classend: index after the class starting at i, or nil and the error.
local function classend(p, pl, i)
  local c = byte(p, i)
  i = i + 1
  if c == B_PERCENT then
    if i > pl then
      return nil, "malformed pattern (ends with '%')"
    end
    return i + 1
  elseif c == B_LBRACKET then
    if byte(p, i) == B_CARET then
      i = i + 1
    end
    repeat
      if i > pl then
        return nil, "malformed pattern (missing ']')"
      end
      c = byte(p, i)
      i = i + 1
      if c == B_PERCENT and i <= pl then
        i = i + 1
      end
    until byte(p, i) == B_RBRACKET
    return i + 1
  end
  return i
end

-- Compile pattern p. `anchored_api` is true for find/match/gsub, where a
-- leading '^' anchors; gmatch matches it literally, as the C gmatch does.
local function compile(p, anchored_api)
  local pl = #p
  local i = 1
  local anchor = false
  if anchored_api and byte(p, 1) == B_CARET then
    anchor = true
    i = 2
  end
  local K, A, Q, C = {}, {}, {}, {}
  local n, ncap = 0, 0
  local lead_spec, lead_index = nil, nil  -- first item, when only captures precede it
  local function add(kind, arg, quant, cost)
    n = n + 1
    K[n], A[n], Q[n], C[n] = kind, arg, quant, cost
  end
  while i <= pl do
    local c = byte(p, i)
    local d = byte(p, i + 1)
    local single = false
    if c == B_OPEN then
      ncap = ncap + 1
      if d == B_CLOSE then
        add(K_POS, 0, Q_ONE, 3)
        i = i + 2
      else
        add(K_OPEN, 0, Q_ONE, 3)
        i = i + 1
      end
    elseif c == B_CLOSE then
      add(K_CLOSE, 0, Q_ONE, 3)
      i = i + 1
    elseif c == B_DOLLAR and i == pl then
      add(K_DOLLAR, 0, Q_ONE, 1)
      i = i + 1
    elseif c == B_PERCENT and d == B_b then
      if i + 2 >= pl then
        add(K_ERROR, "malformed pattern (missing arguments to '%b')", Q_ONE, 1)
        break
      end
      add(K_BALANCE, byte(p, i + 2) * 256 + byte(p, i + 3), Q_ONE, 1)
      i = i + 4
    elseif c == B_PERCENT and d == B_f then
      i = i + 2
      if byte(p, i) ~= B_LBRACKET then
        add(K_ERROR, "missing '[' after '%f' in pattern", Q_ONE, 1)
        break
      end
      local ep, err = classend(p, pl, i)
      if ep == nil then
        add(K_ERROR, err, Q_ONE, 1)
        break
      end
      add(K_FRONTIER, bracket_set(p, i, ep - 1), Q_ONE, 2 * (ep - i) + 1)
      i = ep
    elseif c == B_PERCENT and d ~= nil and d >= B_0 and d <= B_9 then
      add(K_BACKREF, d - B_0, Q_ONE, 1)
      i = i + 2
    else
      single = true
    end
    if single then
      local ep, err = classend(p, pl, i)
      if ep == nil then
        add(K_ERROR, err, Q_ONE, 1)
        break
      end
      local kind, arg, cost = K_CHAR, c, 2
      if c == B_DOT then
        kind = K_ANY
      elseif c == B_PERCENT then
        local set = class_set(d)
        if set then
          kind, arg = K_SET, set
        else
          arg = d
        end
      elseif c == B_LBRACKET then
        kind, arg, cost = K_SET, bracket_set(p, i, ep - 1), ep - i + 1
      end
      if kind == K_SET and n == ncap and lead_index == nil then
        lead_spec, lead_index = sub(p, i, ep - 1), n + 1
      end
      local q = QUANTIFIER[byte(p, ep)]
      if q then
        add(kind, arg, q, cost)
        i = ep + 1
      else
        add(kind, arg, Q_ONE, cost)
        i = ep
      end
    end
  end
  K[n + 1] = K_END
  return {
    K = K, A = A, Q = Q, C = C, n = n, ncap = ncap, anchor = anchor, pattern = p,
    lead_spec = lead_spec, lead_index = lead_index,
  }
end

-- ------------------------------------------------------------------ errors
-- Pattern errors read as the C function's: "file:line: message" at the line
-- that called find/match/gsub (or the gmatch iterator). The entry points
-- below are registered here; an error walks up to the nearest one and is
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

-- `return pass(f())` instead of `return f()` in entry points: f may raise,
-- and a tail call would remove the entry's frame that `raise` looks for.
local function pass(...)
  return ...
end

-- First start >= s1 whose item `first` (a literal byte or a set) can match,
-- or nil: lets the scan over start positions skip in C. The C calls work on
-- slices of at most `window` bytes, so each one is short.
local function next_candidate(first, s1, window)
  local span = 64
  while s1 <= SLEN do
    local last = s1 + span - 1
    if last > SLEN then
      last = SLEN
    end
    local piece = sub(S, s1, last)
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
      s1 = next_candidate(first, s1, window)
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
        s1 = next_candidate(first, s1, window)
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
      local at = next_candidate(first, src, window)
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
  compile = compile,
  find = find_aux,
  gmatch = gmatch_aux,
  gsub = gsub_aux,
  kinds = {
    END = K_END, CHAR = K_CHAR, ANY = K_ANY, SET = K_SET, OPEN = K_OPEN, POS = K_POS,
    CLOSE = K_CLOSE, DOLLAR = K_DOLLAR, BALANCE = K_BALANCE, FRONTIER = K_FRONTIER,
    BACKREF = K_BACKREF, ERROR = K_ERROR,
  },
  quantifiers = { ONE = Q_ONE, OPT = Q_OPT, STAR = Q_STAR, PLUS = Q_PLUS, MIN = Q_MIN },
}
