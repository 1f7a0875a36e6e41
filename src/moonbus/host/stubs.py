"""Editor support for script authors: LuaLS definitions and a luacheck config.

``moonbus stubs`` writes three files so that a script author's editor knows
every global a script can use (completion, hover docs, type checks) and
luacheck flags a misspelt one:

* ``moonbus_meta/moonbus.lua``: a ``---@meta`` file for the Lua Language
  Server, rendered from ``moonbus.host.reference`` (moonbus's own globals)
  and from the host application's ``@lua_api`` classes, whose Python type
  hints become LuaLS types (``int`` → ``integer``, ``list[Npc]`` → ``Npc[]``,
  another ``@lua_api`` class → that class);
* ``.luarc.json``: points LuaLS at that folder, selects Lua 5.4 and turns off
  the standard libraries the sandbox removes (``io``, ``debug``, ``package``);
* ``.luacheckrc``: the same globals as read-only for luacheck, plus the
  lifecycle functions a script may define.

Pure functions of their inputs: no file is read, nothing is imported.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moonbus.host.reference import LuaFunction, LuaGlobal, Reference
from moonbus.lua.exposure import exposed_methods, is_lua_api

__all__ = ["StubFiles", "lua_type", "render_luacheckrc", "render_luarc", "render_meta",
           "render_stubs"]

LIFECYCLE = ("on_start", "poll", "on_stop")
_SCALARS: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean",
                            type(None): "nil", bytes: "string", object: "any"}


@dataclass(frozen=True)
class StubFiles:
    """The three files, by path relative to the output folder."""

    files: dict[str, str]


def lua_type(hint: Any) -> str:
    """The LuaLS type for one Python type hint (``any`` when it cannot tell)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return "any"
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [lua_type(a) for a in args if a is not type(None)]
        text = "|".join(dict.fromkeys(parts)) or "nil"
        return f"{text}?" if type(None) in args and len(parts) == 1 else (
            f"{text}|nil" if type(None) in args else text)
    if origin in (list, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str
    ):
        inner = lua_type(args[0]) if args else "any"
        return f"{inner}[]" if "|" not in inner else f"({inner})[]"
    if origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping)):
        if len(args) == 2:
            return f"table<{lua_type(args[0])}, {lua_type(args[1])}>"
        return "table"
    if isinstance(origin, type) and exposed_methods(origin):
        return origin.__name__  # a generic @lua_api class: Entity[T] -> Entity
    if isinstance(hint, type):
        if exposed_methods(hint):
            return hint.__name__
        if issubclass(hint, Mapping):
            return "table"
    return "any"


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable hints (forward refs): no types, still a stub
        return {}


def _lua_api_classes(apis: Mapping[str, object]) -> list[type]:
    """The API objects' classes and every @lua_api class their methods return."""
    seen: dict[type, None] = {}
    todo = [type(obj) for obj in apis.values() if is_lua_api(obj)]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen[cls] = None
        for name in sorted(exposed_methods(cls)):
            ret = _hints(getattr(cls, name)).get("return")
            stack = [ret]
            while stack:
                h = stack.pop()
                for candidate in (h, typing.get_origin(h)):
                    if isinstance(candidate, type) and exposed_methods(candidate):
                        todo.append(candidate)
                stack.extend(typing.get_args(h))
    return list(seen)


def _doc(obj: Any) -> list[str]:
    text = inspect.getdoc(obj) or ""
    first = text.strip().split("\n\n", 1)[0].replace("\n", " ")
    return [f"---{first}"] if first else []


def _class_block(cls: type) -> list[str]:
    out = [*_doc(cls), f"---@class {cls.__name__}", f"local {cls.__name__} = {{}}", ""]
    for name in sorted(exposed_methods(cls)):
        fn = getattr(cls, name)
        hints = _hints(fn)
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        out += _doc(fn)
        for p in params:
            if p.kind is p.VAR_POSITIONAL:
                out.append(f"---@param ... {lua_type(hints.get(p.name, Any))}")
            elif p.kind is not p.VAR_KEYWORD:
                optional = "?" if p.default is not p.empty else ""
                out.append(f"---@param {p.name}{optional} {lua_type(hints.get(p.name, Any))}")
        if "return" in hints and hints["return"] is not type(None):
            out.append(f"---@return {lua_type(hints['return'])}")
        names = ", ".join("..." if p.kind is p.VAR_POSITIONAL else p.name
                          for p in params if p.kind is not p.VAR_KEYWORD)
        out += [f"function {cls.__name__}:{name}({names}) end", ""]
    return out


def _function_lines(owner: str, fn: LuaFunction) -> list[str]:
    out = [f"---{fn.summary}"]
    for name, typ in fn.params:
        out.append(f"---@param {name} {typ}" if name != "..." else f"---@param ... {typ}")
    if fn.returns != "nil":
        out.append(f"---@return {fn.returns}")
    args = ", ".join(n for n, _ in fn.params)
    prefix = f"{owner}{':' if fn.method else '.'}" if owner else ""
    return [*out, f"function {prefix}{fn.name}({args}) end", ""]


def _global_block(g: LuaGlobal) -> list[str]:
    if g.kind == "function" and g.call is not None:
        return [f"---{g.summary}", *_function_lines("", g.call)[1:]]
    if g.kind == "value":
        return [f"---{g.summary}", "---@type table<string, any>", f"{g.name} = {{}}", ""]
    cls = f"moonbus.{g.name.capitalize()}"
    out = [f"---{g.summary}", f"---@class {cls}"]
    for name, typ, summary in g.fields:
        out.append(f"---@field {name} {typ} {summary}")
    out += [f"{g.name} = {{}}", ""]
    for fn in g.functions:
        out += _function_lines(g.name, fn)
    return out


def render_meta(
    apis: Mapping[str, object],
    event_types: Mapping[str, str],
    reference: Reference | None = None,
) -> str:
    """The ``---@meta`` file: moonbus's globals, the shared handles, the app's APIs."""
    ref = reference or Reference()
    out = ["---@meta moonbus", "-- Generated by `moonbus stubs`: do not edit.", ""]
    for kind in ref.shared_kinds:
        out += [f"---@class moonbus.Shared{kind.name.capitalize()}",
                f"local Shared{kind.name.capitalize()} = {{}}", ""]
        out += [line for fn in kind.functions
                for line in _function_lines(f"Shared{kind.name.capitalize()}", fn)]
    for g in ref.moonbus:
        out += _global_block(g)
    keys = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(event_types.items()))
    out += ["---The declared event names.", f"events.EventType = {{ {keys} }}", ""]
    for cls in _lua_api_classes(apis):
        out += _class_block(cls)
    for name, obj in sorted(apis.items()):
        typ = type(obj).__name__ if is_lua_api(obj) else "table"
        out += [f"---@type {typ}", f"{name} = {{}}", ""]
    out += ["---Lifecycle (optional): runs once when the script starts; return false to refuse.",
            "---@return boolean?", "function on_start() end", "",
            "---Lifecycle (optional): runs again and again; return the delay in ms.",
            "---@return number?", "function poll() end", "",
            "---Lifecycle (optional): runs once when the script stops.",
            "function on_stop() end", ""]
    return "\n".join(out)


def render_luarc(meta_dir: str) -> str:
    """``.luarc.json`` for the Lua Language Server."""
    config = {
        "$schema": "https://raw.githubusercontent.com/LuaLS/vscode-lua/master/setting/schema.json",
        "runtime.version": "Lua 5.4",
        "runtime.builtin": {"io": "disable", "debug": "disable", "package": "disable"},
        "workspace.library": [meta_dir],
        "workspace.checkThirdParty": False,
        "diagnostics.globals": list(LIFECYCLE),
    }
    return json.dumps(config, indent=2) + "\n"


def _lua_table(fields: Mapping[str, Any], indent: str) -> str:
    inner = indent + "  "
    parts = []
    for key, value in sorted(fields.items()):
        rendered = _lua_table(value, inner) if isinstance(value, dict) else "{}"
        parts.append(f"{inner}{key} = {rendered},")
    body = "\n".join(parts)
    return "{ fields = {\n" + body + f"\n{indent}}} }}" if parts else "{ other_fields = true }"


def render_luacheckrc(
    apis: Mapping[str, object], event_types: Mapping[str, str], reference: Reference | None = None
) -> str:
    """``.luacheckrc``: every sandbox global read-only, the lifecycle functions writable."""
    ref = reference or Reference()
    globals_: dict[str, Any] = {}
    for g in ref.moonbus:
        if g.kind == "library":
            members: dict[str, Any] = {fn.name: {} for fn in g.functions}
            for name, _typ, _summary in g.fields:
                members[name] = {k: {} for k in event_types} if name == "EventType" else {}
            globals_[g.name] = members
        else:
            globals_[g.name] = {}
    for name, (members_, _summary) in ref.standard_libraries.items():
        globals_[name] = {m: {} for m in members_}
    for name in (*ref.standard_functions, *ref.standard_values):
        globals_[name] = {}
    for name in apis:
        globals_[name] = {}
    lines = ["-- Generated by `moonbus stubs`: the globals a moonbus script sees.",
             'std = "moonbus"', "stds.moonbus = {",
             f"  globals = {{ {', '.join(json.dumps(n) for n in LIFECYCLE)} }},",
             "  read_globals = {"]
    for name, members in sorted(globals_.items()):
        value = "{ other_fields = true }" if name in apis or name == "options" else (
            _lua_table(members, "    ") if members else "{}")
        lines.append(f"    {name} = {value},")
    lines += ["  },", "}", "max_line_length = false", ""]
    return "\n".join(lines)


def render_stubs(
    apis: Mapping[str, object], event_types: Mapping[str, str], meta_dir: str = "moonbus_meta"
) -> StubFiles:
    """All three files for one app's globals."""
    return StubFiles({
        f"{meta_dir}/moonbus.lua": render_meta(apis, event_types),
        ".luarc.json": render_luarc(meta_dir),
        ".luacheckrc": render_luacheckrc(apis, event_types),
    })
