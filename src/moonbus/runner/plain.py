"""Checking that job arguments are plain data, on the submitting thread.

Why here and not only in the worker: a job's arguments cross from the
submitting thread into a worker's Lua state, so they must be plain copies
(``None``, ``bool``, ``int`` in the 64-bit range, ``float``, ``str``, lists,
tuples and mappings of those). Checking at ``submit`` makes a bad argument fail
the future at once, with the position of the offending value in the message
(``args[1]['pos'][0]``), instead of after the job has waited in the queue.

Host objects marked ``@lua_api`` are refused too: a runner job runs on a worker
thread, and game objects are not thread-safe; results that must touch the game
go through the action queue (``apply=``) and run on the host's main thread.

Pure functions; any thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from moonbus.errors import JobDataError
from moonbus.lua.convert import MAX_DEPTH

__all__ = ["INT_MAX", "INT_MIN", "check_args"]

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_KEY_TYPES = (str, int, float, bool)
_FLAT = frozenset({int, float, str, bool, type(None)})


def check_args(args: Sequence[Any]) -> tuple[Any, ...]:
    """Return ``args`` as a tuple after checking every value is plain data.

    Raises ``JobDataError`` naming the position and the problem.
    """
    if type(args) is tuple and _flat(args):
        return args
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, (list, tuple)):
        raise JobDataError(
            f"args must be a tuple or list of values, not {type(args).__name__}"
        )
    for index, value in enumerate(args):
        _check(value, f"args[{index}]", 0, set())
    return tuple(args)


def _flat(args: tuple[Any, ...]) -> bool:
    for value in args:  # the common case, checked without building paths
        kind = type(value)
        if kind not in _FLAT or (kind is int and not INT_MIN <= value <= INT_MAX):
            return False
    return True


def _check(value: Any, path: str, depth: int, active: set[int]) -> None:
    if value is None or isinstance(value, (bool, float, str)):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise JobDataError(f"{path}: integer {value} does not fit Lua's 64-bit integers")
        return
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in active:
            raise JobDataError(f"{path}: cyclic value (it contains itself)")
        if depth >= MAX_DEPTH:
            raise JobDataError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        active.add(id(value))
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, _KEY_TYPES):
                    raise JobDataError(
                        f"{path}: table key of type {type(key).__name__} cannot go to Lua"
                    )
                if isinstance(key, int) and not INT_MIN <= key <= INT_MAX:
                    raise JobDataError(f"{path}: key {key} does not fit Lua's 64-bit integers")
                if isinstance(key, float) and key != key:
                    raise JobDataError(f"{path}: NaN cannot be a table key")
                _check(item, f"{path}[{key!r}]", depth + 1, active)
        else:
            for index, item in enumerate(value):
                _check(item, f"{path}[{index}]", depth + 1, active)
        active.discard(id(value))
        return
    raise JobDataError(
        f"{path}: a Python {type(value).__name__} cannot be passed to a runner job "
        "(only None, bool, int, float, str, lists, tuples and mappings)"
    )
