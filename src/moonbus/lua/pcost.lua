-- moonbus sandbox: how long the C pattern matcher can take.
--
-- patterns.lua calls the C string.find / match / gmatch / gsub only when
-- this chunk's bound says the call finishes within BUDGET steps; otherwise
-- the pure-Lua port (pmatch.lua) runs under the time limit's hook.
--
-- The bound. A step is one call of the C match(), one singlematch() (weight
-- 2 for a character or %class, length + 1 for a [set]; pmatch.lua's C[i]),
-- a capture item (3), or one byte scanned by %b, a back-reference or a
-- plain find. For a pattern, the steps of one match() call at item i on a
-- subject of length n (M = n + 1) are bounded by a polynomial T_i(M),
-- computed item by item from the end, following lstrlib.c:
--   * a single item costs its weight, a capture its weight + 1, $ and %f a
--     constant; %b and a back-reference scan at most M bytes;
--   * x* x+ x- count or take up to M repetitions (weight c each) and retry
--     the rest after each: T = M*c + M*T_rest, except when at most one retry
--     can be slow: when the rest always succeeds (the first retry wins:
--     M*c + T_rest), or when every character x matches makes the rest fail
--     at its first test (its first mandatory item is disjoint from x, or the
--     rest succeeds as soon as that item matches): M*(c + f + 1) + 2*T_rest,
--     f being the cost of that quick failure;
--   * x? retries the rest at most twice.
-- find/match try n + 1 start positions (1 when anchored), a gmatch call
-- n + 2, gsub 2(n + 1) (a position is retried once after an empty match).
-- When a failing start can only fail within a fixed-width prefix ("%s+",
-- "(%d+)", "[^,]+"), successful matches are paid for by the characters they
-- consume and the whole scan is linear: (n + 2) * k. prepare() takes the
-- smaller bound and adds the cost of returning captures; patterns.lua adds
-- gsub's replacements (per match: ncap + 4, and 2 per byte of a
-- replacement string) and calls C when the total is at most BUDGET.
--
-- Why it is safe. Every choice point of the C matcher is one of the cases
-- above (pmatch.lua has the same structure, and counts its steps in the
-- same unit: tests/lua/test_sandbox_patterns.py checks on generated
-- patterns and subjects that the steps taken never exceed the bound). What
-- a step costs was measured on adversarial subjects at the largest length
-- the bound lets through: at most about 3 ns (31 nested captures), mostly
-- below 1 ns; BUDGET = 500,000 steps is about 1.5 ms of C at worst, and
-- the benchmark row "pattern matching, slowest C call the dispatcher
-- allows" re-measures it.
--
-- Patterns the C matcher could raise an error for (error_free) get no C
-- route at all: see patterns.lua.
--
-- Runs once per state after pmatch.lua (full standard library); `...` is
-- pmatch.lua's table and an optional budget (tests use 0 to force the
-- port). Pure functions of the pattern: no state.

local port, budget = ...

local c_find = string.find
local pairs, ipairs = pairs, ipairs
local compile = port.compile
local KIND, QUANT = port.kinds, port.quantifiers

-- Steps a C call may take.
local BUDGET = budget or 500000
local MAX_DEGREE = 24           -- higher powers of M are folded into this one
local SUBJECT_CAP = 1 << 52     -- no subject is longer (memory)
local MAXCAPTURES = 32
local MAXCCALLS = 200

-- ------------------------------------------------------------ polynomials
-- Coefficients of powers of M = n + 1, lowest first (p[1] is constant).
-- All floats: counts grow exponentially with x? items, and integers wrap.
local function poly_const(c)
  return { 0.0 + c }
end

local function poly_add(a, b)
  local r = {}
  for i = 1, (#a > #b and #a or #b) do
    r[i] = 0.0 + (a[i] or 0) + (b[i] or 0)
  end
  return r
end

local function poly_add_const(a, c)
  local r = {}
  for i = 1, #a do
    r[i] = a[i]
  end
  r[1] = 0.0 + r[1] + c
  return r
end

-- a * M, folding the top power into MAX_DEGREE (M >= 1, so it only grows).
local function poly_mul_m(a)
  local r = { 0.0 }
  for i = 1, #a do
    local j = i + 1
    if j > MAX_DEGREE + 1 then
      j = MAX_DEGREE + 1
    end
    r[j] = 0.0 + (r[j] or 0) + a[i]
  end
  for i = 1, #r do
    r[i] = r[i] or 0.0
  end
  return r
end

local function poly_scale(a, k)
  local r = {}
  for i = 1, #a do
    r[i] = a[i] * (0.0 + k)
  end
  return r
end

local function poly_eval(a, m)
  local v = 0.0
  for i = #a, 1, -1 do
    v = v * m + a[i]
  end
  return v
end

-- ------------------------------------------------------------------- sets
-- A set of bytes is a table {[byte] = true}; nil stands for "any byte".
local EMPTY = {}
local FULL_SIZE = 256

local function set_size(set)
  local n = 0
  for _ in pairs(set) do
    n = n + 1
  end
  return n
end

local function disjoint(a, b)
  if a == EMPTY or b == EMPTY then
    return true
  elseif a == nil or b == nil then
    return false
  end
  for k in pairs(a) do
    if b[k] then
      return false
    end
  end
  return true
end

local function union(a, b)
  if a == nil or b == nil then
    return nil
  end
  local r = {}
  for k in pairs(a) do
    r[k] = true
  end
  for k in pairs(b) do
    r[k] = true
  end
  return r
end

-- ---------------------------------------------------------------- analysis
local K_END, K_CHAR, K_ANY, K_SET = KIND.END, KIND.CHAR, KIND.ANY, KIND.SET
local K_OPEN, K_POS, K_CLOSE, K_DOLLAR = KIND.OPEN, KIND.POS, KIND.CLOSE, KIND.DOLLAR
local K_BALANCE, K_FRONTIER, K_BACKREF, K_ERROR = KIND.BALANCE, KIND.FRONTIER, KIND.BACKREF, KIND.ERROR
local Q_ONE, Q_OPT, Q_STAR, Q_PLUS, Q_MIN = QUANT.ONE, QUANT.OPT, QUANT.STAR, QUANT.PLUS, QUANT.MIN

-- The bytes a single item matches (nil: any byte).
local function item_set(cp, i)
  local k = cp.K[i]
  if k == K_CHAR then
    return { [cp.A[i]] = true }
  elseif k == K_SET then
    local set = cp.A[i]
    if set_size(set) == FULL_SIZE then
      return nil
    end
    return set
  end
  return nil
end

-- Per item i, from the end of the pattern (cp.C[i] = c is the item's weight):
--   T[i]   polynomial in M bounding the steps of a fresh match() call at item
--          i (its entry counts 1; an item reached by goto pays no entry, so
--          T[i] bounds that too);
--   AS[i]  the call always succeeds (or raises an error);
--   SAS[i] ... and every choice point in it succeeds at its first try;
--   EE[i]  the call succeeds at the end of the subject;
--   F[i]   bytes the current character must be in for the call to succeed
--          (nil: unknown); otherwise it fails within FF[i] steps;
--   FS[i]  the call succeeds whenever the current character is in F[i].
-- The choice points, as in lstrlib.c: x* and x+ count up to M repetitions
-- (c each) and retry the rest at each; x- retries the rest after each of up
-- to M repetitions; x? tries the rest twice. Each is entered after one
-- singlematch (c) in match() itself.
local function analyse(cp)
  local K, Q, C, n = cp.K, cp.Q, cp.C, cp.n
  local T, AS, SAS, EE, F, FF, FS = {}, {}, {}, {}, {}, {}, {}
  T[n + 1], AS[n + 1], SAS[n + 1], EE[n + 1], FF[n + 1], FS[n + 1] = poly_const(1), true, true, true, 1, true
  for i = n, 1, -1 do
    local k, c = K[i], C[i]
    local t, as, ee, fs, ff = T[i + 1], AS[i + 1], EE[i + 1], FS[i + 1], FF[i + 1]
    if k == K_ERROR then
      T[i], AS[i], SAS[i], EE[i], F[i], FF[i], FS[i] = poly_const(2), true, true, true, EMPTY, 2, true
    elseif k == K_OPEN or k == K_POS or k == K_CLOSE then
      -- entry, the capture, a fresh call for the rest
      T[i], AS[i], SAS[i], EE[i] = poly_add_const(t, c + 1), as, SAS[i + 1], ee
      F[i], FF[i], FS[i] = F[i + 1], ff + c + 1, fs
    elseif k == K_DOLLAR then
      T[i], AS[i], SAS[i], EE[i], F[i], FF[i], FS[i] = poly_const(2), false, false, true, EMPTY, 2, false
    elseif k == K_BALANCE then
      -- entry, first byte, at most M - 1 bytes scanned, then the rest
      T[i] = poly_add(t, { 2, 1 })
      AS[i], SAS[i], EE[i], F[i], FF[i], FS[i] = false, false, false, { [cp.A[i] // 256] = true }, 2, false
    elseif k == K_FRONTIER then
      T[i], AS[i], SAS[i], EE[i], F[i], FF[i], FS[i] = poly_add_const(t, c + 1), false, false, false, cp.A[i], c + 1, false
    elseif k == K_BACKREF then
      -- entry, the check, a comparison of at most M - 1 bytes, then the rest
      T[i] = poly_add(t, { 2, 1 })
      AS[i], SAS[i], EE[i], F[i], FF[i], FS[i] = false, false, false, nil, 0, false
    else
      local q, x = Q[i], item_set(cp, i)
      -- At most one try of the rest can be slow when every character x
      -- matches fails the rest at once, or when the rest succeeds as soon as
      -- its first item matches (then the first such try ends the search);
      -- the try at the end of the repetitions may fail slowly first: 2 * t.
      local rest_fast = fs or disjoint(x, F[i + 1])
      if q == Q_ONE then
        T[i] = poly_add_const(t, c)
      elseif q == Q_OPT then
        if as then
          T[i] = poly_add_const(t, c + 1)
        elseif rest_fast then
          T[i] = poly_add_const(poly_scale(t, 2), c + 2 * ff + 1)
        else
          T[i] = poly_add_const(poly_scale(t, 2), c + 1)
        end
      else -- x* x+ x-: entry and a singlematch, then the expansion
        local expand
        if as then
          -- the first try succeeds (x-: after no repetition)
          expand = q == Q_MIN and t or poly_add(poly_mul_m({ c }), t)
        elseif rest_fast then
          expand = poly_add(poly_mul_m({ c + ff + 1 }), poly_scale(t, 2))
        else
          expand = poly_add(poly_mul_m({ c }), poly_mul_m(t))
        end
        T[i] = poly_add_const(expand, c + 1)
      end
      if q == Q_ONE or q == Q_PLUS then
        AS[i], SAS[i], EE[i], F[i], FF[i], FS[i] = false, false, false, x, c + 1, as
      else
        -- x covering every byte, before a rest that succeeds at the end:
        -- some try (at the latest the one at the end) succeeds.
        AS[i] = as or (q ~= Q_OPT and x == nil and ee)
        SAS[i], EE[i] = SAS[i + 1], ee
        F[i], FF[i], FS[i] = union(x, F[i + 1]), c + ff + 1, AS[i]
      end
    end
    -- Only item i + 1's polynomial and set are ever needed: memory stays
    -- flat for long patterns.
    T[i + 1], F[i + 1] = nil, nil
  end
  return T, SAS
end

-- Linear bound for the whole scan (see header): (n + 2) * k, or nil. The
-- pattern must be a fixed-width prefix (single items, x?, captures, %f, $)
-- followed by a suffix in which every choice succeeds at its first try
-- (SAS); an x+ right before the suffix is x then x*. A failing start then
-- costs at most `prefix` steps, a successful one `prefix + suffix` plus
-- `widest` per character it consumes.
local function linear_factor(cp, SAS)
  local K, Q, C, n = cp.K, cp.Q, cp.C, cp.n
  local j0 = n + 1
  while j0 > 1 and SAS[j0 - 1] do
    j0 = j0 - 1
  end
  local suffix, widest = 1.0, 0
  for i = j0, n do
    suffix = suffix + 2 * C[i] + 2
    if Q[i] == Q_STAR and C[i] > widest then
      widest = C[i]
    end
  end
  local prefix = 0.0
  for i = j0 - 1, 1, -1 do
    local k, q, c = K[i], Q[i], C[i]
    if k == K_OPEN or k == K_POS or k == K_CLOSE or k == K_FRONTIER then
      prefix = prefix + c + 1
    elseif k == K_DOLLAR then
      prefix = prefix + 2
    elseif k == K_CHAR or k == K_ANY or k == K_SET then
      if q == Q_ONE then
        prefix = prefix + c + 1
      elseif q == Q_PLUS and i == j0 - 1 then
        prefix = prefix + c + 1
        suffix = suffix + 2 * c + 2
        if c > widest then
          widest = c
        end
      elseif q == Q_OPT then
        prefix = 2 * prefix + c + 2
      else
        return nil
      end
    else
      return nil
    end
  end
  return 2 * prefix + 2 * suffix + widest + 1
end

-- Largest n (0 .. SUBJECT_CAP) with cost(n) <= budget, or -1.
local function largest_n(cost, budget)
  if cost(0) > budget then
    return -1
  end
  local lo, hi = 0, SUBJECT_CAP
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if cost(mid) <= budget then
      lo = mid
    else
      hi = mid - 1
    end
  end
  return lo
end

-- Has the pattern none of lstrlib's SPECIALS? (then find does a plain search)
local function no_specials(p)
  for _, special in ipairs({ "^", "$", "*", "+", "?", ".", "(", "[", "%", "-" }) do
    if c_find(p, special, 1, true) then
      return false
    end
  end
  return true
end

-- The first item, when every match must start with it: a literal byte or a
-- class spec. The Lua scan then jumps to where it matches.
local function lead(cp)
  local K, Q, i = cp.K, cp.Q, 1
  while (K[i] == K_OPEN or K[i] == K_POS) and i <= MAXCAPTURES do
    i = i + 1
  end
  if Q[i] ~= Q_ONE and Q[i] ~= Q_PLUS then
    return nil
  end
  if K[i] == K_CHAR then
    return cp.A[i], BUDGET // 2
  elseif K[i] == K_SET and cp.lead_spec and cp.lead_index == i then
    return cp.lead_spec, BUDGET // (cp.C[i] + 1)
  end
  return nil
end

-- lmemfind costs at most (n - lp + 2) * (lp + 1) steps.
local function plain_cost(n, lp)
  if lp == 0 or lp > n then
    return 0
  end
  return (n - lp + 2.0) * (lp + 1.0)
end

-- Can the C matcher raise an error for this pattern? Errors are lazy, but
-- whether one is possible is static: the capture state at each item does
-- not depend on the subject, and each nested match() call advances at least
-- one item, so the depth never exceeds n + 1. Patterns that could raise run
-- in the port, which raises the same message at the script's line (a C
-- error would name the wrapper's line: a tail call from Lua to C keeps the
-- Lua frame).
local function error_free(cp)
  local K, A, n = cp.K, cp.A, cp.n
  if n + 1 >= MAXCCALLS then
    return false
  end
  local level, open = 0, {}
  for i = 1, n do
    local k = K[i]
    if k == K_ERROR then
      return false
    elseif k == K_OPEN or k == K_POS then
      if level >= MAXCAPTURES then
        return false
      end
      level = level + 1
      open[level] = k == K_OPEN
    elseif k == K_CLOSE then
      local l = level
      while l >= 1 and not open[l] do
        l = l - 1
      end
      if l < 1 then
        return false
      end
      open[l] = false
    elseif k == K_BACKREF then
      local l = A[i]
      if l < 1 or l > level or open[l] then
        return false
      end
    end
  end
  for l = 1, level do
    if open[l] then
      return false  -- "unfinished capture" once a match succeeds
    end
  end
  return true
end

local function prepare(p, anchored_api)
  local cp = compile(p, anchored_api)
  local T, SAS = analyse(cp)
  local t = T[1]
  local lin = linear_factor(cp, SAS)
  local caps = cp.ncap + 1
  -- Floats throughout: integer products could wrap around for large n.
  local function scan(starts)
    return function(n)
      n = n + 0.0
      local m = n + 1
      local w = starts(n) * poly_eval(t, m)
      if lin and (n + 2) * lin < w then
        w = (n + 2) * lin
      end
      return w + caps * m
    end
  end
  if anchored_api then
    local one = function() return 1 end
    cp.cost_find = scan(cp.anchor and one or function(n) return n + 1 end)
    cp.cost_gsub = scan(cp.anchor and one or function(n) return 2 * (n + 1) end)
    cp.nmax_find = largest_n(cp.cost_find, BUDGET)
    cp.nmax_gsub = largest_n(cp.cost_gsub, BUDGET / 2)
    cp.plain = no_specials(p)
  else
    cp.cost_gmatch = scan(function(n) return n + 2 end)
    cp.nmax_gmatch = largest_n(cp.cost_gmatch, BUDGET)
  end
  cp.first, cp.window = lead(cp)
  if not error_free(cp) then
    cp.nmax_find, cp.nmax_gsub, cp.nmax_gmatch = -1, -1, -1
  end
  if anchored_api then
    -- find without arguments 3 and 4 (a plain search when no specials)
    cp.nmax_fast = cp.nmax_find
    if cp.plain then
      local lp = #p
      cp.nmax_fast = largest_n(function(n) return plain_cost(n, lp) end, BUDGET)
    end
  end
  return cp
end

return {
  budget = BUDGET,
  prepare = prepare,
  plain_cost = plain_cost,
  no_specials = no_specials,
}
