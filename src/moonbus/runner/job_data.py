"""Job arguments into Lua and results out of it, with the runner's errors.

What may cross (plain data) and what a failure becomes (``JobDataError``,
``ScriptMemoryError``, ``ScriptError``) in one place; called by the worker
that owns the engine (``moonbus.runner.worker``), on its thread.
"""

from __future__ import annotations

from typing import Any

from moonbus.errors import JobDataError, ScriptError, ScriptMemoryError
from moonbus.lua.lua_room import LuaValueTooLarge

__all__ = ["args_fit", "args_to_lua", "not_utf8", "results_to_py"]


def not_utf8(exc: UnicodeDecodeError) -> JobDataError:
    """A job result holding a Lua string that is not UTF-8 text (lupa decodes
    every string it hands to Python as UTF-8)."""
    problem = JobDataError(f"job result contains text that is not valid UTF-8: {exc}")
    problem.__cause__ = exc
    return problem


def args_to_lua(
    converter: Any, args: tuple[Any, ...], lua_memory_error: type[BaseException]
) -> list[Any]:
    """Copy non-scalar arguments into Lua tables (scalars go as themselves)."""
    to_lua = converter.to_lua
    args_fit(converter, args)
    try:
        return [to_lua(value) for value in args]
    except LuaValueTooLarge as exc:
        raise ScriptMemoryError(f"job arguments: {exc}") from exc
    except TypeError as exc:
        raise JobDataError(f"job arguments are not plain data: {exc}") from exc
    except lua_memory_error as exc:
        raise ScriptMemoryError("out of memory while copying the job arguments") from exc


def args_fit(converter: Any, args: tuple[Any, ...]) -> None:
    """``ScriptMemoryError`` unless all of ``args`` fit in the engine's free memory
    together: lupa pushes them with unprotected Lua calls, where a memory error
    aborts the process (``moonbus.lua.lua_room``)."""
    try:
        converter.room.admit(args)
    except LuaValueTooLarge as exc:
        raise ScriptMemoryError(f"job arguments: {exc}") from exc


def results_to_py(
    converter: Any, values: tuple[Any, ...], lua_memory_error: type[BaseException],
    lua_error: type[BaseException],
) -> Any:
    """Copy results that are not all scalars out of Lua."""
    to_py = converter.to_py
    converted = []
    for number, value in enumerate(values, 1):
        try:
            converted.append(to_py(value))
        except TypeError as exc:
            raise JobDataError(f"job result #{number} is not plain data: {exc}") from exc
        except lua_memory_error as exc:
            raise ScriptMemoryError(
                f"out of memory while reading job result #{number}"
            ) from exc
        except lua_error as exc:
            raise ScriptError(f"job result #{number} could not be read: {exc}") from exc
    if not converted:
        return None
    if len(converted) == 1:
        return converted[0]
    return tuple(converted)
