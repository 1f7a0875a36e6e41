-- moonbus sandbox: the pattern compiler of the Lua port of lstrlib.c's matcher.
--
-- Why a compiler: pmatch.lua (the matcher) and pcost.lua (the bound that
-- decides between the C matcher and the port) both read a pattern as items,
-- so the text is parsed once into arrays: K kind, A argument, Q quantifier,
-- C cost. Parsing stops at the first malformed item, which becomes an error
-- item carrying lstrlib's message; the matcher raises it only when it
-- reaches it, as the C matcher does, so this changes nothing observable.
-- C[i] is the item's weight in patterns.lua's cost bound: 2 for a single
-- character or class, its length + 1 for a [set], 3 for a capture item, 1
-- otherwise. Character classes are read from the C matcher itself, so %a and
-- friends follow the same C locale. The item kinds and quantifiers are
-- numbered here; pmatch.lua repeats them as constants and checks they agree.
--
-- Threads: runs inside one Lua state, used by one thread at a time; the set
-- caches below belong to the state.
--
-- Runs once per state, before pmatch.lua, with the full standard library.
-- Returns { compile = compile, kinds = {...}, quantifiers = {...} }.

local byte, char, sub = string.byte, string.char, string.sub
local c_gmatch = string.gmatch
local unpack = table.unpack

-- Item kinds. A single-character item (CHAR, ANY, SET) carries a quantifier.
-- <const>: compile-time constants, no upvalues (pmatch.lua reads the tables
-- returned below once, at load).
local K_END <const>, K_CHAR <const>, K_ANY <const>, K_SET <const> = 0, 1, 2, 3
local K_OPEN <const>, K_POS <const>, K_CLOSE <const>, K_DOLLAR <const> = 4, 5, 6, 7
local K_BALANCE <const>, K_FRONTIER <const>, K_BACKREF <const>, K_ERROR <const> = 8, 9, 10, 11
local Q_ONE <const>, Q_OPT <const>, Q_STAR <const>, Q_PLUS <const>, Q_MIN <const> = 0, 1, 2, 3, 4

local B_PERCENT <const>, B_OPEN <const>, B_CLOSE <const> = 37, 40, 41
local B_LBRACKET <const>, B_RBRACKET <const>, B_CARET <const> = 91, 93, 94
local B_DOLLAR <const>, B_DOT <const>, B_DASH <const> = 36, 46, 45
local B_b <const>, B_f <const>, B_0 <const>, B_9 <const> = 98, 102, 48, 57

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

return {
  compile = compile,
  kinds = {
    END = K_END, CHAR = K_CHAR, ANY = K_ANY, SET = K_SET, OPEN = K_OPEN, POS = K_POS,
    CLOSE = K_CLOSE, DOLLAR = K_DOLLAR, BALANCE = K_BALANCE, FRONTIER = K_FRONTIER,
    BACKREF = K_BACKREF, ERROR = K_ERROR,
  },
  quantifiers = { ONE = Q_ONE, OPT = Q_OPT, STAR = Q_STAR, PLUS = Q_PLUS, MIN = Q_MIN },
}
