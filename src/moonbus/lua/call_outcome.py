"""How a Lua call ended, as Python sees it: values, or the ``ScriptError`` family.

``CallOutcome`` is the part of ``LuaEngine`` (``engine.py``) that turns what a
guarded call left (its results, the ``LuaError`` it raised, the abort reason
the call state recorded) into the values returned or the exception raised:
``ScriptTimeout`` (naming the chunk whose parse a time limit cut),
``ScriptCancelled``, ``ScriptMemoryError`` or ``ScriptError`` with the Lua
message, its ``file:line`` and the traceback (``split_error``). It is a base
class of the engine, not an object of its own, so a call that failed reaches
it as a method of the engine; the C delivery calls ``outcome`` too, for calls
it could not settle alone.

Threads: runs on the thread that made the call, under the engine's ``_lock``.
The attributes it reads are set by ``LuaEngine.__init__``.
"""

from __future__ import annotations

import re
from typing import Any

from moonbus.errors import ScriptCancelled, ScriptError, ScriptMemoryError, ScriptTimeout
from moonbus.lua.compile_limits import CompileCounters, chunk_display

__all__ = ["MEMORY_MESSAGE", "CallOutcome", "split_error"]

_WHERE = re.compile(r"^(?:\[string \"(.+?)\"\]|([^\s:][^:\n]*?)):(\d+):")
# The innermost frame is a C function other than `error` (whose level the
# script chose): Python code the script called raised the error.
_RAISED_IN_C = re.compile(r"\n\t\[C\]: in (?!.*'error'$)[^\n]*$", re.MULTILINE)
_SCRIPT_FRAME = re.compile(r"^\t([^\s\[=:][^:\n]*?\.lua):(\d+): ", re.MULTILINE)
MEMORY_MESSAGE = "not enough memory"  # how Lua says it ran out


def split_error(text: str) -> tuple[str, str | None, str]:
    """(first line, "file:line" or None, full traceback) of a Lua error text.

    An error raised by Python code that a script called (a host API, a
    shared value of another kind) carries no position of its own; it gets
    the innermost script frame of the traceback (a ``.lua`` file, not ``[C]``
    or moonbus's own chunks), so the message still says where the script was.
    ``error(msg, 0)`` keeps its choice of no position.
    """
    message, _, trace = text.partition("\nstack traceback:")
    message = message.strip()
    match = _WHERE.match(message)
    where = None
    if match:
        where = f"{match.group(1) or match.group(2)}:{match.group(3)}"
    elif _RAISED_IN_C.match(trace):
        frame = _SCRIPT_FRAME.search(trace)
        if frame is not None:
            where = f"{frame.group(1)}:{frame.group(2)}"
            message = f"{where}: {message}"
    return message, where, text


class CallOutcome:
    """Values or exceptions for how a call ended (a base class of ``LuaEngine``)."""

    # Set by LuaEngine.__init__ (annotations only: no class attributes).
    name: str
    _lua: Any
    _compiling: Any
    _compile_counters: CompileCounters

    def outcome(
        self,
        result: Any,
        failure: BaseException | None,
        reason: str | None,
        limit: float | None,
    ) -> tuple[Any, ...]:
        """A call's values, or the ``ScriptError`` family raised for how it ended
        (also used by the C delivery path for calls it could not settle alone)."""
        if failure is None:
            values = result if isinstance(result, tuple) else (result,)
            if values[0] is True:
                return tuple(values[1:])
            text = str(values[1]) if len(values) > 1 else "unknown error"
        else:
            text = str(failure)
        compiling = self._cut_compile() if reason is not None else None
        if reason == "timeout":
            message = (
                f"time limit of {limit * 1000:.0f} ms exceeded" if limit else "time limit exceeded"
            )
            if compiling is not None:
                self._compile_counters.timed_out()
                message += f" while compiling {compiling}"
            raise ScriptTimeout(f"{self.name}: {message}", traceback=text)
        if reason is not None:
            raise ScriptCancelled(f"{self.name}: cancelled", traceback=text)
        if isinstance(failure, self._lua.LuaMemoryError):
            raise ScriptMemoryError(f"{self.name}: out of memory", traceback=text)
        raise self.script_error(text)

    def script_error(self, text: str) -> ScriptError:
        """The exception for an error text from ``message_handler`` (the ``false, text``
        of ``protected_call``): ``ScriptMemoryError`` when Lua ran out of memory,
        else ``ScriptError`` with the message, ``where`` and the traceback."""
        if text.startswith(MEMORY_MESSAGE):
            return ScriptMemoryError(f"{self.name}: out of memory", traceback=text)
        message, where, full = split_error(text)
        return ScriptError(message, where=where, traceback=full)

    def _cut_compile(self) -> str | None:
        # After an aborted call: the chunk whose parse the abort cut (the
        # prelude's marker, which the cut parse could not clear), cleared here.
        compiling = self._compiling
        chunk = compiling["chunk"] if compiling is not None else None
        if chunk is None:
            return None
        compiling["chunk"] = None
        return chunk_display(str(chunk))
