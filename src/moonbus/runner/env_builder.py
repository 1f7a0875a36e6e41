"""Fresh job environments built inside Lua, in the same call as the job.

Why: ``LuaEngine.new_env()`` is a Python → Lua round trip that builds the
sandbox environment by copying every library entry by entry; for a tiny job
(``return 1 + ...``) that costs several times more than the job itself. A
worker therefore generates, once, a Lua function whose table constructors
produce the same environment in one step, and calls it from the job's own
Lua call (see ``worker.py``'s trampoline).

The generated builder is derived from the sandbox itself, never written by
hand: two environments made by ``engine.new_env()`` are compared, and the
builder copies exactly what they hold. It is only used when the comparison
shows the shape it knows how to reproduce:

* every global is the same value in both environments (shared, immutable
  functions), except
* ``_G`` (the environment itself) and ``load`` (a per-environment closure
  whose default chunk environment is that environment; the builder gives each
  new environment a ``load`` that passes itself explicitly, as a tail call so
  error positions still point at the caller), and
* library tables (``string``, ``math``...), fresh in each environment, with
  identical non-table contents and no metatable; the builder makes a fresh
  shallow copy for every job.

Anything else (a new per-environment closure, a nested table, a metatable)
means the sandbox changed in a way this module does not know: ``build_source``
then returns None with the reason, and the worker falls back to
``engine.new_env()`` for every job (slower, always faithful).

Threads: called by the worker that owns the engine.
"""

from __future__ import annotations

from typing import Any

from moonbus.lua.engine import LuaEngine

__all__ = ["GENERATOR", "make_builder"]

# Runs in a sandbox environment; receives two templates, returns the builder's
# source, or nil and the reason why the templates cannot be reproduced.
GENERATOR = r"""
local T1, T2 = ...
local function sorted_keys(a, b, where)
  local keys = {}
  for k in pairs(a) do
    if type(k) ~= "string" then
      return nil, where .. " has a non-string key"
    end
    if rawget(b, k) == nil then
      return nil, where .. "." .. k .. " exists in only one environment"
    end
    keys[#keys + 1] = k
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then
      return nil, where .. "." .. tostring(k) .. " exists in only one environment"
    end
  end
  table.sort(keys)
  return keys
end
if getmetatable(T1) ~= nil or getmetatable(T2) ~= nil then
  return nil, "environments have a metatable"
end
local keys, why = sorted_keys(T1, T2, "_G")
if not keys then
  return nil, why
end
local head, fields = { "local T = ...", "local T_load = T.load" }, {}
for i, k in ipairs(keys) do
  local a, b = rawget(T1, k), rawget(T2, k)
  if k == "_G" then
    if not (rawequal(a, T1) and rawequal(b, T2)) then
      return nil, "_G is not the environment itself"
    end
  elseif k == "load" then
    if type(a) ~= "function" then
      return nil, "load is not a function"
    end
  elseif type(a) == "table" then
    if rawequal(a, b) then
      return nil, k .. " is one table shared by all environments"
    end
    if getmetatable(a) ~= nil then
      return nil, k .. " has a metatable"
    end
    local sub, why2 = sorted_keys(a, b, k)
    if not sub then
      return nil, why2
    end
    local lib = "L" .. i
    head[#head + 1] = string.format("local %s = T[%q]", lib, k)
    local parts = {}
    for _, kk in ipairs(sub) do
      local v = rawget(a, kk)
      if type(v) == "table" or not rawequal(v, rawget(b, kk)) then
        return nil, k .. "." .. kk .. " is not one shared value"
      end
      parts[#parts + 1] = string.format("[%q] = %s[%q]", kk, lib, kk)
    end
    fields[#fields + 1] = string.format("[%q] = {%s}", k, table.concat(parts, ", "))
  elseif not rawequal(a, b) then
    return nil, k .. " differs between environments"
  elseif type(a) == "table" or type(a) == "userdata" or type(a) == "thread" then
    return nil, k .. " is a mutable shared value"
  else
    fields[#fields + 1] = string.format("[%q] = T[%q]", k, k)
  end
end
if rawget(T1, "_G") == nil or rawget(T1, "load") == nil then
  return nil, "environments lack _G or load"
end
head[#head + 1] = "return function()"
head[#head + 1] = "  local env = {" .. table.concat(fields, ", ") .. "}"
head[#head + 1] = "  env._G = env"
head[#head + 1] = "  env.load = function(chunk, chunkname, mode, chunkenv)"
head[#head + 1] = "    if chunkenv == nil then chunkenv = env end"
head[#head + 1] = "    return T_load(chunk, chunkname, mode, chunkenv)"
head[#head + 1] = "  end"
head[#head + 1] = "  return env"
head[#head + 1] = "end"
return table.concat(head, "\n")
"""


def make_builder(engine: LuaEngine, blank: Any) -> tuple[Any, str | None]:
    """(builder function, None) or (None, reason it cannot be used).

    ``blank`` is an empty table used as the compile environment of helper
    chunks (they read no globals of their own).
    """
    first, second = engine.new_env(), engine.new_env()
    generator = engine.compile(GENERATOR, "runner-env-generator", first, capped=False)
    values = engine.call(generator, first, second, limit=None)
    if values[0] is None:
        return None, str(values[1]) if len(values) > 1 else "unknown reason"
    chunk = engine.compile(values[0], "runner-env-builder", blank, capped=False)
    return engine.call(chunk, first, limit=None)[0], None
