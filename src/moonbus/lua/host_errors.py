"""What a script reads when a host function it called raised (SPEC §4b).

Nothing of Python shows to a script: every Python callable a script can reach
is wrapped by ``host_function`` (host_bridge.lua) into a plain Lua function, and
when the Python side raises, that wrapper raises a Lua *string* made here
instead of lupa's wrapped exception object (a userdata whose ``tostring`` is
Python's ``str``).

The text keeps the message the host wrote for the script (moonbus errors,
game API errors, shared-store errors...) and removes what is Python's own:

* Python's argument-count complaints (``MemoryInt.get() takes 1 positional
  argument but 3 were given``) become "wrong number of arguments" for the
  Lua-facing name;
* reprs with addresses (``<object object at 0x7f...>``), ``<class '...'>``,
  lupa's wrapper type names (``_LuaTable``), and tracebacks are replaced;
* errors that only a host bug raises (``AttributeError``, ``NameError``...)
  become "internal error" and are logged on the host with their traceback;
* the message is cut to ``MAX_MESSAGE`` bytes.

Pure functions, called on whatever thread runs the engine.
"""

from __future__ import annotations

import logging
import re

__all__ = ["MAX_MESSAGE", "MEMORY_MESSAGE", "describe_host_error", "scrub"]

MAX_MESSAGE = 2048
MEMORY_MESSAGE = "not enough memory"

_log = logging.getLogger("moonbus.lua")

_ARGUMENTS = re.compile(
    r"^[\w.<>]*\(\) (?:takes|missing|got an unexpected|got multiple|takes no)"
)
_CLASS = re.compile(r"<class '([\w.]+)'>")
_ADDRESS_REPR = re.compile(r"<[^<>\n]*? at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_LUPA_TYPES = re.compile(r"\b_?Lua(Table|Function|Thread|UserData|Object)\b")
_TRACEBACK = "Traceback (most recent call last)"
# Python's names for the values a script passes, where messages written for
# Python callers say which type they got ("got str 'x'"): Lua's names instead.
_BUILTIN_TYPES = re.compile(r"\b(got|type|of type) (str|int|float|bool|NoneType|dict|list|tuple)\b")
_LUA_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
              "NoneType": "nil", "dict": "table", "list": "table", "tuple": "table"}
_PYTHON_VALUE = re.compile(r"\ba Python [\w.]+|\bPython value\b")
# Raised by the host's own mistakes, never on purpose for a script to read.
_INTERNAL = (AttributeError, NameError, AssertionError, ImportError, SystemError,
             RecursionError, NotImplementedError, UnboundLocalError)


def scrub(text: str) -> str:
    """``text`` without Python reprs, addresses, lupa type names or tracebacks, cut
    to ``MAX_MESSAGE`` bytes."""
    if len(text) > 4 * MAX_MESSAGE:  # bound the work below; cut exactly at the end
        text = text[: 4 * MAX_MESSAGE]
    head, _, _ = text.partition(_TRACEBACK)
    text = head.rstrip() if head.strip() else "error in the host"
    text = _CLASS.sub("a host type", text)
    text = _ADDRESS_REPR.sub("a host value", text)
    text = _ADDRESS.sub("(address)", text)
    text = _LUPA_TYPES.sub(lambda m: m.group(1).lower(), text)
    text = _BUILTIN_TYPES.sub(lambda m: f"{m.group(1)} {_LUA_NAMES[m.group(2)]}", text)
    text = _PYTHON_VALUE.sub(lambda m: "a host value" if m.group(0).startswith("a ")
                             else "host value", text)
    data = text.encode("utf-8", errors="replace")
    if len(data) > MAX_MESSAGE:
        text = data[:MAX_MESSAGE].decode("utf-8", errors="ignore") + "… [truncated]"
    return text


def describe_host_error(exc: object, name: str) -> str:
    """The string a script gets for ``exc``, raised by the host function ``name``.

    Drops ``exc``'s traceback: Lua keeps the exception (lupa's error value)
    until its garbage collector runs, and the traceback's frames would keep
    the call's arguments alive with it (a refused 1 MiB emit, again and again,
    outside the Lua memory limit).
    """
    if isinstance(exc, BaseException):
        text = describe(exc, name)
        exc.__traceback__ = None
        exc.__context__ = exc.__cause__ = None
        return text
    return scrub(str(exc))


def describe(exc: BaseException, name: str) -> str:
    """``describe_host_error`` for a Python exception (its traceback left alone)."""
    if isinstance(exc, MemoryError):
        return MEMORY_MESSAGE  # the engine reports it as ScriptMemoryError
    if isinstance(exc, _INTERNAL):
        _log.error("host function %s raised", name, exc_info=exc)
        return f"{name}: internal error in the host (logged)"
    if isinstance(exc, UnicodeDecodeError):  # lupa decoding a Lua string argument
        return f"{name}: a string argument is not valid UTF-8 (bad byte at position {exc.start})"
    text = str(exc)
    if isinstance(exc, TypeError) and _ARGUMENTS.match(text):
        return f"{name}: wrong number of arguments"
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"not found: {exc.args[0]}"
    return scrub(text) or f"{name}: error in the host"
