"""Checks a host API when it is registered, not later inside every script.

``Runtime.register_api(name, value)`` makes ``value`` a Lua global in every
script loaded afterwards. Without a check, a bad registration shows up only
when a script loads (once per script, as a conversion error that does not
say which global) or, worse, silently: a global called ``math`` replaces
Lua's own library for every script. So registration refuses at once, with
a ``ConfigError`` that names the global and says what to do (SPEC §10):

* the name must be a Lua identifier (ASCII letters, digits, ``_``; not a Lua
  keyword) and must not shadow a Lua standard library global (``math``,
  ``string``, ``print``...) or one of moonbus's own (``events``, ``shared``...);
* the value must be what the script host can hand to Lua: ``bool``, ``int``
  (64-bit), ``float``, ``str``, mappings with string/number/bool keys, lists
  and tuples of such values (nested at most ``MAX_DEPTH`` deep, no cycles),
  and instances of ``@lua_api`` classes with at least one public method.
  A plain function, a class, a module or an undecorated object is refused,
  with the path of the offending part (``grid.cells[3]``).

Pure functions of their arguments; any thread may call them.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Any, Final

from moonbus.errors import ConfigError
from moonbus.lua.convert import MAX_DEPTH
from moonbus.lua.exposure import exposed_methods, is_lua_api

__all__ = ["LUA_KEYWORDS", "LUA_STANDARD_GLOBALS", "MOONBUS_OWN_GLOBALS", "check_api",
           "check_event_types", "check_global_name"]

#: Lua 5.4's reserved words (a global cannot be called that at all).
LUA_KEYWORDS: Final = frozenset({
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
})

#: Globals of Lua 5.4's standard library (also those the sandbox removes:
#: a host value under one of these names would look like the real thing).
LUA_STANDARD_GLOBALS: Final = frozenset({
    "_G", "_VERSION", "_ENV", "assert", "collectgarbage", "coroutine", "debug", "dofile",
    "error", "getmetatable", "io", "ipairs", "load", "loadfile", "math", "next", "os",
    "package", "pairs", "pcall", "print", "rawequal", "rawget", "rawlen", "rawset",
    "require", "select", "setmetatable", "string", "table", "tonumber", "tostring", "type",
    "utf8", "warn", "xpcall",
})

#: The globals moonbus installs in every script (``host/script_env.lua``).
MOONBUS_OWN_GLOBALS: Final = frozenset({
    "events", "shared", "logger", "stats", "options", "sleep", "time",
})

_LUA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT64 = (-(2**63), 2**63 - 1)


def check_global_name(name: object) -> str:
    """``name`` if it can be a host global; else ``ConfigError`` saying why and what to do."""
    if not isinstance(name, str):
        raise ConfigError(f"a Lua global's name must be a string, got {type(name).__name__}")
    if not _LUA_NAME.match(name):
        raise ConfigError(
            f"cannot register a Lua global named {name!r}: a Lua name is ASCII letters, "
            "digits and '_', not starting with a digit; pick a name like 'game_map'"
        )
    if name in LUA_KEYWORDS:
        raise ConfigError(
            f"cannot register a Lua global named {name!r}: it is a Lua keyword; pick another name"
        )
    if name in LUA_STANDARD_GLOBALS:
        raise ConfigError(
            f"cannot register a Lua global named {name!r}: it would shadow Lua's standard "
            f"library global {name!r} in every script; register it under another name "
            f"(e.g. 'game_{name.strip('_').lower()}')"
        )
    if name in MOONBUS_OWN_GLOBALS:
        raise ConfigError(
            f"cannot register a Lua global named {name!r}: moonbus already gives every script "
            f"its {name!r}; register it under another name (e.g. 'game_{name}')"
        )
    return name


def _refusal(global_name: str, path: str, what: str, advice: str) -> ConfigError:
    where = "" if path == global_name else f" at {path}"
    return ConfigError(
        f"cannot register Lua global {global_name!r}: {what}{where} cannot cross into Lua; "
        f"{advice}"
    )


def _check_value(global_name: str, value: Any, path: str, depth: int, seen: set[int]) -> None:
    if value is None:
        if path == global_name:
            raise _refusal(global_name, path, "None", "a nil global is no API: register a value")
        return
    if isinstance(value, (bool, float, str)):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _refusal(global_name, path, f"the integer {value}",
                           "Lua integers are 64-bit: pass it as a float or a string")
        return
    if depth > MAX_DEPTH:
        raise _refusal(global_name, path, f"data nested deeper than {MAX_DEPTH} levels",
                       "flatten it")
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in seen:
            raise _refusal(global_name, path, "a cycle (a container inside itself)",
                           "give Lua plain, acyclic data")
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, (str, int, float, bool)):
                        raise _refusal(global_name, f"{path}[{key!r}]",
                                       f"a {type(key).__name__} key",
                                       "table keys are strings, numbers or booleans")
                    inner = f"{path}.{key}" if isinstance(key, str) and _LUA_NAME.match(key) \
                        else f"{path}[{key!r}]"
                    _check_value(global_name, item, inner, depth + 1, seen)
            else:
                for index, item in enumerate(value, start=1):  # Lua's 1-based view
                    _check_value(global_name, item, f"{path}[{index}]", depth + 1, seen)
        finally:
            seen.discard(id(value))
        return
    kind = type(value)
    if isinstance(value, type):
        advice = (f"register an instance (e.g. {value.__name__}(...))"
                  if exposed_methods(value) else
                  "decorate the class with @lua_api and register an instance of it")
        raise _refusal(global_name, path, f"the class {value.__name__}", advice)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)) \
            or (callable(value) and not exposed_methods(kind)):
        raise _refusal(global_name, path, f"a Python {kind.__name__}",
                       "put it in a method of a @lua_api class and register an instance")
    if isinstance(value, types.ModuleType):
        raise _refusal(global_name, path, f"the module {value.__name__}",
                       "expose what scripts need through a @lua_api class")
    if exposed_methods(kind):
        return
    if is_lua_api(value):
        raise _refusal(global_name, path, f"a {kind.__name__} (a @lua_api class without "
                       "public methods)", "give it at least one public method")
    raise _refusal(global_name, path, f"a Python {kind.__name__}",
                   f"decorate class {kind.__name__} with @lua_api (from moonbus.lua.exposure) "
                   "so scripts can call its public methods, or pass plain data")


def check_api(name: object, value: Any) -> str:
    """Refuse ``value`` as Lua global ``name`` unless a script could use it; returns the name."""
    checked = check_global_name(name)
    _check_value(checked, value, checked, 0, set())
    return checked


def check_event_types(types_: Mapping[str, str]) -> dict[str, str]:
    """A copy of an ``events.EventType`` table after checking it: keys are Lua
    names, values non-empty strings (``ConfigError`` naming the entry)."""
    table: dict[str, str] = {}
    for key, value in types_.items():
        if not isinstance(key, str) or not _LUA_NAME.match(key) or key in LUA_KEYWORDS:
            raise ConfigError(f"EventType key {key!r} is not a Lua name (letters, digits, '_')")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"EventType.{key} must be a non-empty event name, got {value!r}")
        table[key] = value
    return table
