"""Every function the sandbox removes is absent and unreachable.

Two views: each name is nil where a script would look for it, and no path
from a sandbox environment (tables, keys, metatables, string methods) leads
to the C function itself. The second compares C function addresses (``%p``
of a light C function is its address in the shared lupa module) with those
of a raw, unsandboxed runtime of the same module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import SandboxFactory

Run = Callable[..., tuple[Any, ...]]

REMOVED = [
    "io",
    "os.execute",
    "os.exit",
    "os.getenv",
    "os.remove",
    "os.rename",
    "os.tmpname",
    "os.setlocale",
    "package",
    "require",
    "dofile",
    "loadfile",
    "debug",
    "string.dump",
    "python",
    "print",
    "loadstring",
    "module",
    "setfenv",
    "getfenv",
]


@pytest.mark.parametrize("name", REMOVED)
def test_removed_name_is_nil(lua: Run, name: str) -> None:
    assert lua(f"return {name}") == (None,)


@pytest.mark.parametrize(
    "source", ['return ("x").dump', "return string.dump", "return (''):dump()"]
)
def test_string_dump_is_gone_also_as_a_method(lua: Run, source: str) -> None:
    if source.endswith("()"):
        with pytest.raises(Exception, match="attempt to call a nil value"):
            lua(source)
    else:
        assert lua(source) == (None,)


def test_string_metatable_index_is_not_reachable(lua: Run) -> None:
    assert lua('local mt = getmetatable(""); return type(mt), mt') == ("string", "string")
    assert lua('return getmetatable("").__index, getmetatable("").dump') == (None, None)


def test_standard_libraries_keep_their_safe_parts(lua: Run) -> None:
    assert lua(
        "return os.time{year=2020, month=1, day=1, hour=0} ~= nil, type(os.clock()),"
        " os.date('!%Y', 0), os.difftime(5, 2)"
    ) == (True, "number", "1970", 3.0)
    assert lua(
        "return math.max(1, 5), string.upper('a'), table.concat({1, 2}, ','),"
        " utf8.char(72), coroutine.isyieldable()"
    ) == (5, "A", "1,2", "H", False)


# ------------------------------------------------------------- reachability
WALK = """
local seen, found = {}, {}
local function walk(v)
  if v == nil or seen[v] then return end
  local t = type(v)
  if t == "function" or t == "userdata" or t == "thread" then
    seen[v] = true
    found[#found + 1] = t .. " " .. string.format("%p", v)
  elseif t == "table" then
    seen[v] = true
    for k, x in pairs(v) do walk(k) walk(x) end
    local mt = getmetatable(v)
    if type(mt) == "table" then walk(mt) end
  end
end
walk(_ENV)
for name in pairs(string) do walk(("")[name]) end
walk(coroutine.running())
return table.concat(found, "\\n")
"""


def _dangerous_functions(factory: SandboxFactory) -> dict[str, str]:
    """name -> "function 0x..." for every C function a script must not reach."""
    raw = factory.lua_module.LuaRuntime(register_eval=True, register_builtins=True)
    listing = raw.execute("""
        local out = {}
        local function add(name, f)
          if type(f) == "function" then out[#out + 1] = name .. "=" .. string.format("%p", f) end
        end
        for _, lib in ipairs({"debug", "io", "package", "python"}) do
          for k, f in pairs(_G[lib]) do add(lib .. "." .. k, f) end
        end
        for _, k in ipairs({"execute", "exit", "getenv", "remove", "rename", "tmpname",
                            "setlocale"}) do
          add("os." .. k, os[k])
        end
        for _, k in ipairs({"create", "resume", "wrap", "close"}) do
          add("coroutine." .. k, coroutine[k])
        end
        for _, k in ipairs({"require", "dofile", "loadfile", "load", "print", "setmetatable",
                            "collectgarbage", "xpcall"}) do
          add(k, _G[k])
        end
        add("string.dump", string.dump)
        add("string.rep", string.rep)
        for _, k in ipairs({"insert", "remove", "sort", "concat", "move"}) do
          add("table." .. k, table[k])
        end
        return table.concat(out, "\\n")
    """)
    pairs = (line.split("=", 1) for line in listing.splitlines())
    return {name: "function " + address for name, address in pairs}


def _reachable(engine: LuaEngine) -> set[str]:
    env = engine.new_env()
    (listing,) = engine.call(engine.compile(WALK, "walk.lua", env), limit=5.0)
    return set(listing.splitlines())


@pytest.fixture(scope="module")
def reachable(factory: SandboxFactory) -> set[str]:
    engine = factory.create("walker")
    try:
        return _reachable(engine)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def dangerous(factory: SandboxFactory) -> dict[str, str]:
    return _dangerous_functions(factory)


def _dangerous_names() -> list[str]:
    with SandboxFactory() as factory:
        return sorted(_dangerous_functions(factory))


@pytest.mark.parametrize("name", _dangerous_names())
def test_original_function_is_unreachable(
    reachable: set[str], dangerous: dict[str, str], name: str
) -> None:
    # debug.* and io.* one by one, the removed os/base functions, and the
    # originals that the sandbox replaces with checked wrappers.
    assert dangerous[name] not in reachable, f"{name} is reachable from a sandbox environment"


def test_walk_finds_the_safe_functions(reachable: set[str], dangerous: dict[str, str]) -> None:
    # The walk itself works: it sees plenty of functions, among them C
    # functions the sandbox keeps (rawlen is shared with the raw runtime).
    assert len(reachable) > 80
    assert set(dangerous.values()).isdisjoint(reachable)


def test_no_python_object_is_reachable(reachable: set[str]) -> None:
    assert [item for item in reachable if item.startswith("userdata")] == []


def test_debug_hook_is_not_observable(lua: Run) -> None:
    # The idle deadline hook exists but scripts cannot see or change it.
    assert lua("return debug") == (None,)
    assert lua("return (pcall(function() return debug.gethook() end))") == (False,)


def test_kept_c_function_is_found_by_the_walk(engine: LuaEngine, factory: SandboxFactory) -> None:
    raw = factory.lua_module.LuaRuntime(register_eval=False, register_builtins=False)
    rawlen_address: Any = raw.execute('return string.format("%p", rawlen)')
    assert "function " + rawlen_address in _reachable(engine)
