"""`load` in the sandbox: text chunks only, into the sandbox environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from moonbus.errors import ScriptError, ScriptSyntaxError
from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import SandboxFactory

Run = Callable[..., tuple[Any, ...]]

# A real precompiled chunk is not needed: the "\27Lua" signature is enough
# for Lua to treat the string as binary, which mode "t" refuses.
BINARY = 'string.char(27) .. "Lua" .. string.rep("\\0", 40)'


def test_binary_chunk_is_refused(lua: Run) -> None:
    assert lua(f"return load({BINARY})") == (
        None,
        "attempt to load a binary chunk (mode is 't')",
    )


def test_real_precompiled_chunk_is_refused(factory: SandboxFactory, lua: Run) -> None:
    raw = factory.lua_module.LuaRuntime(encoding=None)
    chunk = raw.execute("return string.dump(function() return 42 end)")
    assert isinstance(chunk, bytes) and chunk.startswith(b"\x1bLua")
    assert raw.execute("return load(...)()", chunk) == 42  # it is a working chunk
    assert lua("return load(...)", chunk) == (None, "attempt to load a binary chunk (mode is 't')")
    assert lua("return load(..., 'c', 't', {})", chunk) == (
        None,
        "attempt to load a binary chunk (mode is 't')",
    )
    with pytest.raises(ScriptError, match="binary chunks are not allowed"):
        lua("return load(..., 'c', 'b')", chunk)


@pytest.mark.parametrize("mode", ["b", "bt"])
def test_binary_mode_is_refused(lua: Run, mode: str) -> None:
    with pytest.raises(ScriptError, match="binary chunks are not allowed in the sandbox"):
        lua(f'return load({BINARY}, "x", "{mode}")')


def test_binary_chunk_with_explicit_text_mode_is_refused(lua: Run) -> None:
    assert lua(f'return load({BINARY}, "x", "t", {{}})') == (
        None,
        "attempt to load a binary chunk (mode is 't')",
    )


def test_reader_function_is_refused(lua: Run) -> None:
    source = """
        local parts = {"return ", "1"}
        local i = 0
        return load(function() i = i + 1 return parts[i] end)
    """
    with pytest.raises(ScriptError, match="only text chunks"):
        lua(source)


def test_host_compile_refuses_binary_chunks(engine: LuaEngine) -> None:
    with pytest.raises(ScriptSyntaxError, match="binary chunk"):
        engine.compile("\x1bLua" + "\0" * 40, "job", engine.new_env())


def test_loaded_chunk_runs_in_the_sandbox_environment(lua: Run) -> None:
    assert lua('return load("return _ENV")() == _ENV, load("return _G")() == _G') == (True, True)
    assert lua('return load("return debug, io, package, python, require")()') == (
        None,
        None,
        None,
        None,
        None,
    )
    assert lua('x = 1 load("x = x + 41")() return x') == (42,)


def test_loaded_chunk_sees_nothing_the_environment_lacks(lua: Run) -> None:
    # Remove something from the env: a loaded chunk must not find it anywhere.
    assert lua('string = nil os = nil return load("return string, os")()') == (None, None)


def test_loaded_chunk_cannot_reach_another_environment(engine: LuaEngine, lua: Run) -> None:
    first = engine.new_env()
    lua('load("secret = 42")()', env=first)
    assert lua("return secret", env=first) == (42,)
    assert lua('return load("return secret")()') == (None,)


def test_explicit_environment_is_respected(lua: Run) -> None:
    assert lua('return load("return x, string", "c", "t", {x = 5})()') == (5, None)


def test_load_reports_syntax_errors_as_values(lua: Run) -> None:
    result = lua('return load("x = = 1", "=chunk")')
    assert result[0] is None
    assert "chunk:1:" in result[1]


def test_nil_env_argument_means_the_sandbox_env(lua: Run) -> None:
    # Plain Lua would give the chunk a nil _ENV; the sandbox gives its own env,
    # never the state's real globals.
    assert lua('return load("return _G", "c", "t", nil)() == _G') == (True,)
