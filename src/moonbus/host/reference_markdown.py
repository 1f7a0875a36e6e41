"""Render ``moonbus.host.reference`` as the scripting reference's Markdown.

Called by the docs build (``docs/hooks.py``) where ``docs/scripting.md`` has
the marker ``<!-- moonbus:lua-reference -->``, so the page can never list a
global the sandbox does not have (``tests/host/test_reference.py`` checks the
catalogue against the sandbox itself).
"""

from __future__ import annotations

from moonbus.host.reference import LuaFunction, LuaGlobal, Reference

__all__ = ["render_reference"]


def _function_rows(owner: str, functions: tuple[LuaFunction, ...]) -> list[str]:
    rows = ["| call | returns | what it does |", "| --- | --- | --- |"]
    for fn in functions:
        note = "" if fn.engines == "both" else f" ({fn.engines} engine only)"
        rows.append(f"| `{fn.signature(owner)}` | `{fn.returns}` | {fn.summary}{note} |")
    return rows


def _global_section(g: LuaGlobal) -> list[str]:
    out = [f"### `{g.name}`", "", g.summary, ""]
    if g.call is not None:
        out += [*_function_rows("", (g.call,)), ""]
    if g.functions:
        out += [*_function_rows(g.name, g.functions), ""]
    for name, lua_type, summary in g.fields:
        out += [f"- `{g.name}.{name}` (`{lua_type}`): {summary}", ""]
    return out


def render_reference(ref: Reference | None = None) -> str:
    """The whole reference: moonbus's globals, shared kinds, the standard library."""
    ref = ref or Reference()
    out: list[str] = ["## moonbus globals", ""]
    for g in ref.moonbus:
        out += _global_section(g)
    out += ["## Shared value handles", "",
            "`shared:int(name)` and its siblings return a handle; call its methods with `:`.", ""]
    for kind in ref.shared_kinds:
        out += [f"### `shared:{kind.name}(name)`", ""]
        out += [*_function_rows("handle", kind.functions), ""]
    out += ["## Lua standard library in the sandbox", "",
            "| global | in the sandbox |", "| --- | --- |"]
    for name, note in sorted({**ref.standard_functions, **ref.standard_values}.items()):
        out.append(f"| `{name}` | {note} |")
    out.append("")
    for name, (members, summary) in ref.standard_libraries.items():
        listed = ", ".join(f"`{m}`" for m in members)
        out += [f"### `{name}`", "", summary, "", f"Members: {listed}.", ""]
    out += ["## Not available", "",
            "These are removed from every sandbox; using them is an error: "
            + ", ".join(f"`{name}`" for name in ref.removed) + ".", ""]
    return "\n".join(out)
