"""The Redis data layout of the shared store, and the scripts that keep it atomic.

Layout (``P`` = the store's prefix, ``NS`` = the namespace with ``%`` and ``:``
escaped as ``%25`` and ``%3A``, so the namespace ends at the first ``:``):

- ``P:NS:name`` - one hash per shared value. Field ``k`` holds the kind
  (``int float string bool table``). Scalars keep their value in field ``v``:
  an int as decimal text, a float as text that round-trips exactly, a string as
  UTF-8, a bool as ``1``/``0``. A table keeps each entry in field ``.key`` (the
  dot keeps user keys apart from ``k``), encoded by ``encode_field``: an int as
  plain decimal text (so ``HINCRBY`` works on it), every other value behind a
  one-letter tag - ``f`` float, ``s`` string, ``b`` bool, ``t`` a nested table
  as JSON (ints stay exact, ``1.0`` stays a float, booleans stay booleans).
- ``P:NS`` - a set of the names that exist in the namespace (``names``,
  ``dump`` and ``clear`` read it; every script that creates a name adds it).

Every write is one script run with ``EVALSHA`` (loaded once, re-loaded on
``NOSCRIPT``): the kind check, the creation of the name, overflow and size
checks and the write happen in one atomic step on the server. Reads are single
commands (``HMGET``, ``HGETALL``, ``EXISTS``), atomic by themselves.

Numbers: Redis's Lua has only doubles, exact to 2**53. 64-bit ints therefore
never go through Lua arithmetic: ``HINCRBY`` adds exactly and refuses to
overflow, and results are read back as text (or returned as a Lua number only
when below 2**53 in size). A delta outside the 64-bit range (``subtract(-2**63)``)
is split in two ``HINCRBY`` steps, undone together on overflow. Floats are
added in Lua (IEEE doubles, the same as Python) and stored with ``%.17g``.

Errors: a script refuses with an error reply ``MOONBUS <what> <detail>``:
``kind <existing kind>``, ``overflow <current value>``, ``fieldkind <tag>``,
``toolong <bytes>``, ``nonfinite <current value>``. Nothing is written first.
"""

from __future__ import annotations

import json
from typing import Any, Final

from moonbus.shared.values import Kind

__all__ = [
    "SCRIPTS",
    "decode_field",
    "decode_scalar",
    "encode_field",
    "field_kind",
    "float_text",
    "index_key",
    "split_delta",
    "value_key",
]

# Lua snippet: refuse another kind (``want`` is a Lua string expression).
_CHECK = """
local kind = redis.call('HGET', KEYS[1], 'k')
if kind and kind ~= {want} then return redis.error_reply('MOONBUS kind ' .. kind) end
"""

# Lua snippet: create the name if it did not exist (after every check passed).
_CREATE = """
if not kind then
  redis.call('HSET', KEYS[1], 'k', {want})
  redis.call('SADD', KEYS[2], ARGV[1])
end
"""

# Lua snippet: add the 64-bit delta ARGV[a] (+ ARGV[b]) to hash field F exactly.
# ``before`` must hold the field's text when ARGV[b] ~= '0' (to undo step one).
# Returns the new value (a number when exact as a double, else text) or an error.
_HINCR = """
local r = redis.pcall('HINCRBY', KEYS[1], F, ARGV[{a}])
if type(r) == 'table' and r.err then
  return redis.error_reply('MOONBUS overflow ' .. redis.call('HGET', KEYS[1], F))
end
if ARGV[{b}] ~= '0' then
  r = redis.pcall('HINCRBY', KEYS[1], F, ARGV[{b}])
  if type(r) == 'table' and r.err then
    redis.call('HSET', KEYS[1], F, before)
    return redis.error_reply('MOONBUS overflow ' .. before)
  end
end
if r < 9007199254740992 and r > -9007199254740992 then return r end
return redis.call('HGET', KEYS[1], F)
"""

# KEYS: value key, index key. ARGV[1] is always the name.
SCRIPTS: Final[dict[str, str]] = {
    # ARGV: name, kind, value text
    "set": _CHECK.format(want="ARGV[2]")
    + _CREATE.format(want="ARGV[2]")
    + """
redis.call('HSET', KEYS[1], 'v', ARGV[3])
return 1
""",
    # ARGV: name, delta part a, delta part b, 'x' when the result cannot fit
    "int_add": _CHECK.format(want="'int'")
    + """
local F = 'v'
if ARGV[4] == 'x' then
  return redis.error_reply('MOONBUS overflow ' .. (redis.call('HGET', KEYS[1], F) or '0'))
end
if not kind then
  if ARGV[3] ~= '0' then return redis.error_reply('MOONBUS overflow 0') end
"""
    + _CREATE.format(want="'int'")
    + """
  redis.call('HSET', KEYS[1], F, ARGV[2])
  return ARGV[2]
end
local before = false
if ARGV[3] ~= '0' then before = redis.call('HGET', KEYS[1], F) end
"""
    + _HINCR.format(a=2, b=3),
    # ARGV: name, float text
    "float_add": _CHECK.format(want="'float'")
    + """
local cur = 0
if kind then cur = tonumber(redis.call('HGET', KEYS[1], 'v')) end
local r = cur + tonumber(ARGV[2])
if r ~= r or r == math.huge or r == -math.huge then
  return redis.error_reply('MOONBUS nonfinite ' .. string.format('%.17g', cur))
end
"""
    + _CREATE.format(want="'float'")
    + """
local text = string.format('%.17g', r)
redis.call('HSET', KEYS[1], 'v', text)
return text
""",
    # ARGV: name, text, limit in bytes
    "string_append": _CHECK.format(want="'string'")
    + """
local cur = ''
if kind then cur = redis.call('HGET', KEYS[1], 'v') end
local size = #cur + #ARGV[2]
if size > tonumber(ARGV[3]) then return redis.error_reply('MOONBUS toolong ' .. size) end
"""
    + _CREATE.format(want="'string'")
    + """
local r = cur .. ARGV[2]
redis.call('HSET', KEYS[1], 'v', r)
return r
""",
    # ARGV: name
    "bool_toggle": _CHECK.format(want="'bool'")
    + """
local r = '1'
if kind and redis.call('HGET', KEYS[1], 'v') == '1' then r = '0' end
"""
    + _CREATE.format(want="'bool'")
    + """
redis.call('HSET', KEYS[1], 'v', r)
return r
""",
    # ARGV: name, field, encoded value
    "table_set": _CHECK.format(want="'table'")
    + _CREATE.format(want="'table'")
    + """
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
""",
    # ARGV: name, field
    "table_remove": _CHECK.format(want="'table'")
    + _CREATE.format(want="'table'")
    + """
return redis.call('HDEL', KEYS[1], ARGV[2])
""",
    # ARGV: name
    "table_clear": _CHECK.format(want="'table'")
    + """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'k', 'table')
redis.call('SADD', KEYS[2], ARGV[1])
return 1
""",
    # ARGV: name, field, delta part a, delta part b, 'x' when the result cannot fit
    "table_incr": _CHECK.format(want="'table'")
    + """
local F = ARGV[2]
local cur = false
if kind then cur = redis.call('HGET', KEYS[1], F) end
if cur then
  local tag = string.sub(cur, 1, 1)
  if tag == 'f' or tag == 's' or tag == 'b' or tag == 't' then
    return redis.error_reply('MOONBUS fieldkind ' .. tag)
  end
end
if ARGV[5] == 'x' then return redis.error_reply('MOONBUS overflow ' .. (cur or '0')) end
if not cur then
  if ARGV[4] ~= '0' then return redis.error_reply('MOONBUS overflow 0') end
"""
    + _CREATE.format(want="'table'")
    + """
  redis.call('HSET', KEYS[1], F, ARGV[3])
  return ARGV[3]
end
local before = cur
"""
    + _HINCR.format(a=3, b=4),
    # ARGV: name, field. Returns 1 or 0.
    "table_contains": _CHECK.format(want="'table'")
    + """
if not kind then return 0 end
return redis.call('HEXISTS', KEYS[1], ARGV[2])
""",
    # ARGV: name. Returns the hash's field names (the caller keeps the '.' ones).
    "table_keys": _CHECK.format(want="'table'")
    + """
return redis.call('HKEYS', KEYS[1])
""",
    # ARGV: name. Returns how many keys were deleted (0 or 1).
    "remove": """
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n
""",
    # KEYS: index key. ARGV: value key prefix ('P:NS:').
    "clear": """
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. name)
end
redis.call('DEL', KEYS[1])
return 1
""",
    # KEYS: index key. ARGV: value key prefix. Returns {name, {field, value...}, ...}.
    "dump": """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fields = redis.call('HGETALL', ARGV[1] .. name)
  if #fields > 0 then
    out[#out + 1] = name
    out[#out + 1] = fields
  end
end
return out
""",
    # KEYS: index key. ARGV: value key prefix. Returns the names that exist.
    "names": """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. name) == 1 then out[#out + 1] = name end
end
return out
""",
}

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_FIELD_TAGS: Final[dict[int, Kind]] = {
    ord("f"): "float",
    ord("s"): "string",
    ord("b"): "bool",
    ord("t"): "table",
}


def _escape(namespace: str) -> str:
    return namespace.replace("%", "%25").replace(":", "%3A")


def index_key(prefix: str, namespace: str) -> bytes:
    """The set of existing names of one namespace."""
    return f"{prefix}:{_escape(namespace)}".encode()


def value_key(prefix: str, namespace: str, name: str) -> bytes:
    """The hash holding one shared value."""
    return f"{prefix}:{_escape(namespace)}:{name}".encode()


def split_delta(delta: int) -> tuple[bytes, bytes, bytes]:
    """``delta`` as ARGV parts (a, b, flag) for ``HINCRBY``: a + b == delta with
    both in the 64-bit range, or flag ``x`` when no 64-bit result is possible."""
    if _INT_MIN <= delta <= _INT_MAX:
        return str(delta).encode(), b"0", b""
    first = _INT_MAX if delta > 0 else _INT_MIN
    rest = delta - first
    if _INT_MIN <= rest <= _INT_MAX:
        return str(first).encode(), str(rest).encode(), b""
    return b"0", b"0", b"x"


def float_text(value: float) -> bytes:
    """A finite float as text that parses back to exactly the same double."""
    return repr(value).encode()


def encode_field(value: Any) -> bytes:
    """A canonical table value as one hash field (see the module docstring)."""
    kind = type(value)
    if kind is int:
        return str(value).encode()
    if kind is float:
        return b"f" + float_text(value)
    if kind is str:
        return b"s" + str(value).encode("utf-8")
    if kind is bool:
        return b"b1" if value else b"b0"
    return b"t" + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def field_kind(raw: bytes) -> Kind:
    """The kind of an encoded table field."""
    return _FIELD_TAGS.get(raw[0], "int") if raw else "int"


def decode_field(raw: bytes) -> Any:
    """The canonical value of an encoded table field."""
    tag = raw[:1]
    if tag == b"f":
        return float(raw[1:])
    if tag == b"s":
        return raw[1:].decode("utf-8")
    if tag == b"b":
        return raw[1:] == b"1"
    if tag == b"t":
        return json.loads(raw[1:])
    return int(raw)


def decode_scalar(kind: bytes, raw: bytes) -> Any:
    """The value of a scalar hash (field ``v``) of the given kind."""
    if kind == b"int":
        return int(raw)
    if kind == b"float":
        return float(raw)
    if kind == b"string":
        return raw.decode("utf-8")
    if kind == b"bool":
        return raw == b"1"
    raise ValueError(f"not a scalar kind: {kind!r}")
