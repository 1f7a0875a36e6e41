"""The Redis data layout of the event store, and the server-side scripts that keep it.

Pure: Lua sources and key names, no Redis client (``redis_backend`` runs them).

Layout (``B`` = ``<prefix>:%events``; the ``%`` keeps these keys apart from the
shared store's, whose escaped namespaces never hold a bare ``%``):

- ``B:stream`` - one Redis Stream holding every event of the deployment in one
  global order. Entry id ``<seq>-0``; fields, always the same and in this
  order (so Redis stores the names once per stream node): ``t`` type, ``k``
  tick (``""`` for none), ``ts`` ms, ``s`` source, ``d`` data as compact JSON,
  ``o`` origin (the id of the store instance that appended it), ``x`` ``1``
  for a *transit* entry (a type the settings do not record: it travels to the
  other processes but is not indexed, counted or returned by queries).
- ``B:seq`` - the global seq counter (also the high-water mark: never goes back).
- ``B:count`` - hash type -> number of recorded events (exact; O(types) summary).
- ``B:s:<type>`` - sorted set of the type's seqs (score = member = seq): queries
  by type and seq, count retention.
- ``B:k:<type>`` - sorted set of the type's ticked events (score = tick, member =
  seq): queries after a tick, tick retention, summary after a tick (``ZCOUNT``).
- ``B:meta`` - hash: ``maxtick`` (newest tick recorded, for retention),
  ``m:<type>`` (the type's newest tick) and ``u:<type>`` (set once a tick of the
  type went backwards in seq order; until then "tick > T" is a seq range).
- ``B:transit`` - sorted set of transit seqs, so the prune can delete them.
- ``B:op:<origin>`` - sorted set (score = op number, member = ``n:reply``) of
  the origin's appends that may still be re-sent after a lost reply: a re-sent
  append finds its reply here and is not applied twice. Every append trims it
  to the ops still in flight; it expires a day after the origin's last append.

The append scripts declare every key they touch. The read, prune and clear
scripts derive per-type keys from ``B`` (they walk all types), so the store
needs a standalone Redis (or one cluster slot), not a sharded cluster.

Seqs and ticks are exact below 2**53 (Lua numbers and sorted-set scores are
doubles); seqs are formatted with ``%d`` because Lua's default formatting
rounds beyond 14 digits.

Errors: ``MOONBUS seq <current>`` - an explicit seq is not after the current one.
``MOONBUS lost <counter> <floor>`` - the counter is below a seq the client has
already seen (the server lost its data); the script moved the counter up to
the floor (its one write) and appended nothing.
A script checks everything before its first write (Redis does not roll a
script back), so a refused call changes nothing.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EVENT_FIELDS", "SCRIPTS", "Keys"]

# Values per event in the append scripts' ARGV.
EVENT_FIELDS: Final = 8


class Keys:
    """Key names (bytes) for one prefix; per-type keys are cached. Any thread."""

    def __init__(self, prefix: str) -> None:
        base = f"{prefix}:%events"
        self.base = base.encode()
        self.stream = f"{base}:stream".encode()
        self.seq = f"{base}:seq".encode()
        self.count = f"{base}:count".encode()
        self.meta = f"{base}:meta".encode()
        self.transit = f"{base}:transit".encode()
        self._types: dict[str, tuple[bytes, bytes]] = {}

    def of_type(self, event_type: str) -> tuple[bytes, bytes]:
        """(seq index, tick index) of one type."""
        keys = self._types.get(event_type)
        if keys is None:
            if len(self._types) > 10_000:  # bound the cache, not the types
                self._types = {}
            name = event_type.encode()
            keys = (self.base + b":s:" + name, self.base + b":k:" + name)
            self._types[event_type] = keys
        return keys

    def ops(self, origin: str) -> bytes:
        return self.base + b":op:" + origin.encode()


_FMT = """
local function fmt(n) return string.format('%d', n) end
"""

# Per-type keys derived from the base (read, prune and clear scripts).
_TYPE_KEYS = """
local base = string.sub(KEYS[1], 1, -8)
local function skey(typ) return base .. ':s:' .. typ end
local function kkey(typ) return base .. ':k:' .. typ end
"""

# Append scripts. KEYS: 1 stream, 2 seq, 3 count, 4 meta, 5 transit, 6 ops,
# then (seq index, tick index) per distinct type of the batch.
# ARGV: 1 origin, 2 op number, 3 lowest op number still in flight, 4 floor
# (the highest seq the client has seen: a counter below it means lost data), then
# EVENT_FIELDS per event: seq ('' = assign), type, type index (1-based, into
# the type keys), tick or '', ts, source, data, '1' recorded / '0' transit.
_APPEND_HEAD = (
    _FMT
    + """
local seen = redis.call('ZRANGEBYSCORE', KEYS[6], ARGV[2], ARGV[2])
if seen[1] then
  -- a re-sent append whose first run was applied: answer as then, change nothing
  local out = {}
  for s in string.gmatch(string.sub(seen[1], string.find(seen[1], ':') + 1), '%d+') do
    out[#out + 1] = tonumber(s)
  end
  return out
end

-- The counter below what this client has seen: the server lost its data
-- (restarted empty). Move the counter back up, so the global order goes on
-- above every seq already handed out, and refuse this append (reported).
local floor = tonumber(ARGV[4])
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if counter < floor then
  redis.call('SET', KEYS[2], fmt(floor))
  return redis.error_reply('MOONBUS lost ' .. fmt(counter) .. ' ' .. fmt(floor))
end

local function record(m, typ, ti, tk)
  redis.call('HINCRBY', KEYS[3], typ, 1)
  redis.call('ZADD', KEYS[5 + 2 * ti], m, m)
  if tk ~= '' then
    redis.call('ZADD', KEYS[6 + 2 * ti], tk, m)
    local t = tonumber(tk)
    local newest = redis.call('HGET', KEYS[4], 'm:' .. typ)
    if newest and t < tonumber(newest) then
      redis.call('HSET', KEYS[4], 'u:' .. typ, '1')
    elseif not newest or t > tonumber(newest) then
      redis.call('HSET', KEYS[4], 'm:' .. typ, tk)
      local top = redis.call('HGET', KEYS[4], 'maxtick')
      if not top or t > tonumber(top) then redis.call('HSET', KEYS[4], 'maxtick', tk) end
    end
  end
end

local function remember(out)
  local parts = {}
  for i, s in ipairs(out) do parts[i] = fmt(s) end
  redis.call('ZADD', KEYS[6], ARGV[2], ARGV[2] .. ':' .. table.concat(parts, ','))
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[6], 86400000)
  return out
end
"""
)

_APPEND_LOOP = """
local out = {}
for a = 4, #ARGV - 1, FIELDS do
  local typ, ti, tk = ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
  local wanted = ARGV[a + 8] == '1'
  local seq = NEXT_SEQ
  local m = fmt(seq)
  if wanted or TRANSIT then
    local x = '0'
    if not wanted then x = '1' end
    redis.call('XADD', KEYS[1], m .. '-0', 't', typ, 'k', tk, 'ts', ARGV[a + 5],
      's', ARGV[a + 6], 'd', ARGV[a + 7], 'o', ARGV[1], 'x', x)
    if wanted then record(m, typ, ti, tk) else redis.call('ZADD', KEYS[5], m, m) end
  end
  out[#out + 1] = seq
end
""".replace("FIELDS", str(EVENT_FIELDS))

SCRIPTS: Final[dict[str, str]] = {
    # The server assigns each event the next seq: INCR and XADD in one atomic
    # step, so the stream never has a gap, whatever happens to the client.
    # Types not recorded go to the stream as transit entries (for the other
    # processes). Returns the seqs.
    "append_new": _APPEND_HEAD
    + _APPEND_LOOP.replace("NEXT_SEQ", "redis.call('INCR', KEYS[2])").replace(
        "TRANSIT", "true"
    )
    + "return remember(out)\n",
    # Events that already have their seq (imports; a bus numbering its own
    # events): the first must be after the counter (the client checked the
    # batch's own order), the counter moves to the last. Types not recorded
    # are not written (an import has no other process to reach). Returns the seqs.
    "append_put": _APPEND_HEAD
    + """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[5]) <= current then
  return redis.error_reply('MOONBUS seq ' .. fmt(current))
end
"""
    + _APPEND_LOOP.replace("NEXT_SEQ", "tonumber(ARGV[a + 1])").replace("TRANSIT", "false")
    + """
redis.call('SET', KEYS[2], fmt(out[#out]))
return remember(out)
""",
    # One page of a query, read atomically.
    # KEYS: 1 stream, 2 count, 3 meta.
    # ARGV: 1 'a' ascending / 'd' descending, 2 lo, 3 hi ('inf' = none) - seq
    # bounds, both exclusive - 4 want (most events returned), 5 budget (most
    # candidates looked at), 6 after tick ('' = none), 7.. types (none: every
    # recorded type; with neither types nor tick the stream is read directly).
    # Returns {done (1/0), cursor (last seq looked at, -1 for none), entries}.
    "page": _FMT
    + _TYPE_KEYS
    + """
local asc = ARGV[1] == 'a'
local lo, want, budget, tick = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local hi = ARGV[3]
local hi_score = '+inf'
if hi ~= 'inf' then hi_score = '(' .. hi end
local out, cursor = {}, -1

local function range(key, low)
  if asc then
    return redis.call('ZRANGEBYSCORE', key, '(' .. fmt(low), hi_score, 'LIMIT', 0, budget)
  end
  return redis.call('ZREVRANGEBYSCORE', key, hi_score, '(' .. fmt(low), 'LIMIT', 0, budget)
end

if #ARGV < 7 and tick == '' then
  local rows
  if asc then
    local stop = '+'
    if hi ~= 'inf' then stop = '(' .. hi .. '-0' end
    rows = redis.call('XRANGE', KEYS[1], '(' .. fmt(lo) .. '-0', stop, 'COUNT', budget)
  else
    local start = '+'
    if hi ~= 'inf' then start = '(' .. hi .. '-0' end
    rows = redis.call('XREVRANGE', KEYS[1], start, '(' .. fmt(lo) .. '-0', 'COUNT', budget)
  end
  for i, row in ipairs(rows) do
    cursor = tonumber(string.sub(row[1], 1, -3))
    if row[2][14] ~= '1' then
      out[#out + 1] = row
      if #out == want then return {i == #rows and #rows < budget and 1 or 0, cursor, out} end
    end
  end
  return {#rows < budget and 1 or 0, cursor, out}
end

local types = {}
if #ARGV >= 7 then
  for i = 7, #ARGV do types[#types + 1] = ARGV[i] end
else
  types = redis.call('HKEYS', KEYS[2])
end
local cands, complete = {}, true
for _, typ in ipairs(types) do
  local sk, kk = skey(typ), kkey(typ)
  local list, check = nil, false
  if tick == '' then
    list = range(sk, lo)
  elseif not redis.call('HGET', KEYS[3], 'u:' .. typ) then
    -- ticks of this type never went backwards: "tick > T" starts at one seq
    local first = redis.call('ZRANGEBYSCORE', kk, '(' .. tick, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if first[1] then
      local b = nil
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', kk, first[2], first[2])) do
        local s = tonumber(m)
        if not b or s < b then b = s end
      end
      list = range(sk, math.max(lo, b - 1))
      check = true -- events without a tick are in the seq index only
    end
  else
    list = {}
    local above = nil
    if hi ~= 'inf' then above = tonumber(hi) end
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', kk, '(' .. tick, '+inf')) do
      local s = tonumber(m)
      if s > lo and (not above or s < above) then list[#list + 1] = m end
    end
  end
  if list then
    if #list >= budget then complete = false end
    for _, m in ipairs(list) do
      local keep = true
      if check then keep = redis.call('ZSCORE', kk, m) ~= false end
      cands[#cands + 1] = {tonumber(m), keep, m}
    end
  end
end
if asc then
  table.sort(cands, function(x, y) return x[1] < y[1] end)
else
  table.sort(cands, function(x, y) return x[1] > y[1] end)
end
local looked = math.min(#cands, budget)
for i = 1, looked do
  local c = cands[i]
  cursor = c[1]
  if c[2] then
    local row = redis.call('XRANGE', KEYS[1], c[3] .. '-0', c[3] .. '-0')[1]
    if row then
      out[#out + 1] = row
      if #out == want then
        return {(i == #cands and complete) and 1 or 0, cursor, out}
      end
    end
  end
end
return {(looked == #cands and complete) and 1 or 0, cursor, out}
""",
    # Count of recorded events by type after a tick. KEYS: 1 stream, 2 count.
    # ARGV: 1 tick. Returns {type, count, ...} for types with events.
    "summary_after": _TYPE_KEYS
    + """
local out = {}
for _, typ in ipairs(redis.call('HKEYS', KEYS[2])) do
  local n = redis.call('ZCOUNT', kkey(typ), '(' .. ARGV[1], '+inf')
  if n > 0 then
    out[#out + 1] = typ
    out[#out + 1] = n
  end
end
return out
""",
    # Retention, at most ARGV[1] deletions per call.
    # KEYS: 1 stream, 2 count, 3 meta, 4 transit, 5 seq.
    # ARGV: 1 budget, 2 transit entries to keep ('' = all), 3 newest seqs whose
    # events are kept at all ('' = no cap: the stream is then trimmed with
    # XTRIM MINID), then per type: type, delete ticks <= this ('' = none),
    # keep this many newest ('' = no limit).
    # Returns {deleted, 1 when more is left to delete}.
    "prune": _FMT
    + _TYPE_KEYS
    + """
local budget, deleted, more = tonumber(ARGV[1]), 0, 0
local function xdel(ms)
  for i = 1, #ms, 500 do
    local ids = {}
    for j = i, math.min(i + 499, #ms) do ids[#ids + 1] = ms[j] .. '-0' end
    redis.call('XDEL', KEYS[1], unpack(ids))
  end
end
local function zrem(key, ms)
  for i = 1, #ms, 500 do
    redis.call('ZREM', key, unpack(ms, i, math.min(i + 499, #ms)))
  end
end
local function drop(typ, ms)
  if #ms == 0 then return end
  xdel(ms)
  zrem(skey(typ), ms)
  zrem(kkey(typ), ms)
  if redis.call('HINCRBY', KEYS[2], typ, -#ms) <= 0 then redis.call('HDEL', KEYS[2], typ) end
  deleted = deleted + #ms
  budget = budget - #ms
end
local function take(ms)
  if #ms >= budget then more = 1 end
  return ms
end
local last = tonumber(redis.call('GET', KEYS[5]) or '0')

if ARGV[3] ~= '' then
  local floor = last - tonumber(ARGV[3])
  if floor > 0 then
    for _, typ in ipairs(redis.call('HKEYS', KEYS[2])) do
      if budget <= 0 then more = 1 break end
      drop(typ, take(redis.call('ZRANGEBYSCORE', skey(typ), '-inf', floor, 'LIMIT', 0, budget)))
    end
    if budget > 0 then
      local ms = take(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', floor, 'LIMIT', 0, budget))
      if #ms > 0 then
        xdel(ms)
        zrem(KEYS[4], ms)
        budget = budget - #ms
      end
    end
    if more == 0 then redis.call('XTRIM', KEYS[1], 'MINID', fmt(floor + 1)) end
  end
end

for a = 4, #ARGV, 3 do
  if budget <= 0 then more = 1 break end
  local typ, max_tick, keep = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if max_tick ~= '' then
    drop(typ, take(redis.call('ZRANGEBYSCORE', kkey(typ), '-inf', max_tick, 'LIMIT', 0, budget)))
  end
  if keep ~= '' and budget > 0 then
    local excess = redis.call('ZCARD', skey(typ)) - tonumber(keep)
    if excess > 0 then
      local n = math.min(excess, budget)
      if n < excess then more = 1 end
      drop(typ, redis.call('ZRANGE', skey(typ), 0, n - 1))
    end
  end
end

if ARGV[2] ~= '' and budget > 0 then
  local ms = take(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', last - tonumber(ARGV[2]),
    'LIMIT', 0, budget))
  if #ms > 0 then
    xdel(ms)
    zrem(KEYS[4], ms)
  end
end
return {deleted, more}
""",
    # Delete up to ARGV[2] events of type ARGV[1]. KEYS: 1 stream, 2 count, 3 meta.
    # Returns {deleted, how many of the type are left}.
    "clear_type": _FMT
    + _TYPE_KEYS
    + """
local typ = ARGV[1]
local ms = redis.call('ZRANGE', skey(typ), 0, tonumber(ARGV[2]) - 1)
for i = 1, #ms, 500 do
  local ids = {}
  for j = i, math.min(i + 499, #ms) do ids[#ids + 1] = ms[j] .. '-0' end
  redis.call('XDEL', KEYS[1], unpack(ids))
  redis.call('ZREM', skey(typ), unpack(ms, i, math.min(i + 499, #ms)))
end
local left = redis.call('ZCARD', skey(typ))
if left == 0 then
  redis.call('UNLINK', kkey(typ))
  redis.call('HDEL', KEYS[2], typ)
  redis.call('HDEL', KEYS[3], 'm:' .. typ, 'u:' .. typ)
elseif #ms > 0 then
  redis.call('HINCRBY', KEYS[2], typ, -#ms)
  for i = 1, #ms, 500 do
    redis.call('ZREM', kkey(typ), unpack(ms, i, math.min(i + 499, #ms)))
  end
end
return {#ms, left}
""",
    # The feed's atomic tail read. KEYS: 1 stream, 2 seq. ARGV: 1 after seq,
    # 2 count. Returns {the seq counter, entries after the seq (at most count)}.
    "tail": """
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
return {counter, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])}
""",
    # Redis lost its data: move the seq counter back up to a seq already handed
    # out (never down). KEYS: 1 seq. ARGV: 1 floor. Returns the counter before.
    "rebase": """
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
if counter < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return counter
""",
    # Delete every event (the seq counter stays). KEYS: 1 stream, 2 count,
    # 3 meta, 4 transit. Returns how many recorded events there were.
    "clear_all": _TYPE_KEYS
    + """
local total = 0
local counts = redis.call('HGETALL', KEYS[2])
for i = 1, #counts, 2 do
  total = total + tonumber(counts[i + 1])
  redis.call('UNLINK', skey(counts[i]), kkey(counts[i]))
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return total
""",
}
