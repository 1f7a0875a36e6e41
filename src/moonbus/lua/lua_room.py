"""Whether a Python value fits in a Lua state's free memory, before it is copied in.

Why (SPEC §4b, "a script can never hang the host"): lupa pushes strings and
builds tables with plain Lua API calls. When the state's memory limit refuses
the allocation, Lua raises its memory error with ``longjmp``:

* inside a Python function called from Lua (a host API's return value, a
  shared-store read), the jump skips lupa's release of the GIL, and the
  thread then waits for the GIL it holds itself: a hang for ever;
* outside any Lua call (an event payload, a job's arguments, ``call_function``
  arguments), Lua has no protected frame to jump to: it panics and the
  process aborts.

Neither can be caught afterwards, so every value is measured first:
``lua_cost`` estimates what its copy allocates in Lua (string bytes, table
slots with Lua's power-of-two growth, headers), and ``LuaRoom.admit`` refuses
it with ``LuaValueTooLarge`` (a ``TypeError``, so every caller's existing
"this value cannot go to Lua" handling names the field or call) unless it
fits in the free memory with a margin for lupa's own allocations around the
copy. The C conversion (``moonbus.lua.fastconvert``) builds its tables inside
a ``lua_pcall``, so its memory errors are ordinary exceptions; its callers
turn them into the same error via ``LuaRoom.refused``.

Owner: the thread running the engine (it reads the state's memory counters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MARGIN", "LuaRoom", "LuaValueTooLarge", "admitted", "argument_cost", "lua_cost"]

# Bytes kept free beyond a value's estimate: lupa's error object, stack growth
# and the call frame that receives the value.
MARGIN = 16 * 1024
# Lua 5.4 sizes on 64-bit, rounded up: a string header (TString + NUL), a
# table header, and one table slot: a hash node is 24 bytes, an array slot
# 16; the part doubles as it grows and the old part is alive during the
# rehash, so 3 slots' worth per entry is the worst case.
_STRING = 40
_TABLE = 64
_ENTRY = 72
_OTHER = 256  # a proxy table or a Lua object met again: small, bounded
_FREE = frozenset((int, float, bool))  # held in the table slot itself


class LuaValueTooLarge(TypeError):
    """A value whose copy into Lua would not fit in the script's memory limit."""

    def __init__(self, cost: int, free: int, limit: int, what: str = "") -> None:
        self.cost = cost
        self.free = free
        self.limit = limit
        super().__init__(
            f"{what}{': ' if what else ''}value too large for the script's Lua memory "
            "limit (memory_limit): "
            f"about {cost} bytes, {max(free, 0)} of {limit} bytes free"
        )


def _str_cost(value: str) -> int:
    if value.isascii():  # O(1) in CPython: one byte per character
        return _STRING + len(value)
    return _STRING + len(value.encode("utf-8", errors="surrogatepass"))


# A Python object passed as a call argument: lupa wraps it in a new userdata
# (a Udata header and lupa's py_object, ~64 bytes), whatever its size. Every
# argument takes a stack slot first (16 bytes; the stack doubles as it
# grows): 20,000 short strings fit beside their slots in 1 MiB, not in it.
_USERDATA = 96
_SLOT = 48


def argument_cost(args: tuple[Any, ...], in_place: set[type]) -> int:
    """Bytes lupa allocates pushing ``args`` as call arguments: a copy of each
    string, a userdata for each other Python object (a list or a dict is not
    copied), only its stack slot for the types in ``in_place`` (numbers,
    booleans, None and lupa's Lua objects)."""
    total = _SLOT * len(args)
    for arg in args:
        if type(arg) in in_place:
            continue
        if isinstance(arg, str):
            total += _str_cost(arg)
        elif isinstance(arg, (bytes, bytearray)):
            total += _STRING + len(arg)
        else:
            total += _USERDATA
    return total


def lua_cost(value: Any, cap: int, max_depth: int = 64) -> int:
    """Estimated bytes Lua allocates to hold a copy of ``value``.

    Stops as soon as the total passes ``cap`` (the walk of a huge value is cut
    short) and past ``max_depth`` levels (a cyclic value: the conversion
    itself rejects it). Scalars inside a container are costed in place (no
    stack entry): this runs before every copy of an event's data.
    """
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list or kind is tuple:
            children: Any = item.items() if kind is dict else item
        elif kind is str:
            total += _str_cost(item)
            children = ()
        elif kind in _FREE or item is None:
            continue
        elif isinstance(item, Mapping):
            children = item.items()
        elif isinstance(item, (list, tuple)):
            children = item
        elif isinstance(item, (str, bytes, bytearray)):
            total += _STRING + len(item)
            children = ()
        else:
            total += _OTHER
            children = ()
        if children:
            total += _TABLE + _ENTRY * len(item)
            if total > cap:
                return total
            if depth >= max_depth:
                continue
            pairs = kind is dict or isinstance(item, Mapping)
            for child in children:
                for part in (child if pairs else (child,)):
                    part_kind = type(part)
                    if part_kind is str:
                        total += _STRING + len(part) if part.isascii() else _str_cost(part)
                    elif part_kind not in _FREE and part is not None:
                        stack.append((part, depth + 1))
        if total > cap:
            return total
    return total


class LuaRoom:
    """The free-memory check of one Lua runtime (``runtime``: its lupa LuaRuntime).

    ``on_refused`` is called once per refused value (the script host counts
    them as ``refused_lua_values``).
    """

    __slots__ = ("_rt", "max_depth", "on_refused")

    def __init__(self, runtime: Any, max_depth: int = 64) -> None:
        self._rt = runtime
        self.max_depth = max_depth
        self.on_refused: Callable[[], None] | None = None

    def free(self) -> tuple[int, int] | None:
        """(bytes free for a value, the limit), or None when the state has no limit."""
        rt = self._rt
        if rt is None:  # released: nothing may go in
            return 0, 0
        limit = rt.get_max_memory()
        if not limit:
            return None
        return int(limit) - int(rt.get_memory_used()) - MARGIN, int(limit)

    def release(self) -> None:
        """Let go of the runtime (its engine closed): ``free`` then reads 0 free."""
        self._rt = None

    def admit(self, value: Any) -> None:
        """Raise ``LuaValueTooLarge`` unless a copy of ``value`` fits in the state."""
        room = self.free()
        if room is None:
            return
        free, limit = room
        cost = lua_cost(value, max(free, 0), self.max_depth)
        if cost > free:  # measured in full (up to the limit), then maybe collected
            cost = lua_cost(value, limit, self.max_depth)
            if self.collected(cost, limit):
                free = int(limit) - int(self._rt.get_memory_used()) - MARGIN
        if cost > free:
            raise self.refused(cost, free, limit)

    def collected(self, cost: int, limit: int) -> bool:
        """Whether a full collection ran to make room for ``cost`` bytes (not
        when they would not fit in an empty state either). Garbage counts as
        used until it is collected, and a refused copy runs nothing that would
        collect it: a payload that fit once was refused for ever after, the
        last copy of it being the garbage."""
        if cost > limit - MARGIN:
            return False
        self._rt.gccollect()
        return True

    def admit_plain(self, data: Mapping[Any, Any], chars: int) -> None:
        """``admit`` for a flat mapping of scalars whose strings (keys and values)
        hold ``chars`` characters in all: a bound (4 UTF-8 bytes a character)
        is checked first, so an ordinary event's data is not walked again."""
        room = self.free()
        if room is None:
            return
        free, limit = room
        if 4 * chars + (_STRING + _ENTRY) * len(data) + _TABLE <= free:
            return
        cost = lua_cost(data, max(free, 0), self.max_depth)
        if cost > free:  # measured in full (up to the limit), then maybe collected
            cost = lua_cost(data, limit, self.max_depth)
            if self.collected(cost, limit):
                free = int(limit) - int(self._rt.get_memory_used()) - MARGIN
        if cost > free:
            raise self.refused(cost, free, limit)

    def refused(self, cost: int, free: int | None = None,
                limit: int | None = None) -> LuaValueTooLarge:
        """The error for a refused value (counted); ``free``/``limit`` default to now."""
        if free is None or limit is None:
            room = self.free()
            free, limit = room if room is not None else (0, 0)
        if self.on_refused is not None:
            self.on_refused()
        return LuaValueTooLarge(cost, free, limit)


def admitted(method: Callable[..., Any], to_lua: Callable[[Any], Any],
             what: str) -> Callable[..., Any]:
    """``method`` with its result passed through ``to_lua`` (``LuaConverter.to_lua``,
    which checks it against the free memory): for host functions returning
    strings that lupa would otherwise push unchecked (a shared string's
    ``get``). ``what`` names the call in the error."""

    def call(*args: Any) -> Any:
        try:
            return to_lua(method(*args))
        except LuaValueTooLarge as exc:
            raise LuaValueTooLarge(exc.cost, exc.free, exc.limit, what) from None

    return call
