"""Plain-data conversion between Python and one Lua state.

Values cross the boundary only as copies:

* Python → Lua: ``None``, ``bool``, ``int``, ``float``, ``str`` as themselves;
  mappings (also frozen event data) → new tables; lists and tuples → new
  sequences (1-based); ``@lua_api`` objects → proxy tables whose methods call
  back into the exposed names only. Anything else is a ``TypeError``: a raw
  Python object never reaches a script. The common shapes (exact lists,
  tuples and dicts of scalars, a few levels deep, ``@lua_api`` objects of a
  class met before) are copied in C when the extension is built
  (``moonbus.lua.fastconvert``, ``native``); everything else, errors
  included, takes the Python path below, so both give the same tables and
  the same errors.
* Lua → Python: scalars as themselves (invalid UTF-8 is replaced); a proxy →
  its Python object; a table → ``list`` when its keys are exactly 1..n, else
  ``dict``; nesting deeper than ``max_depth`` or cyclic tables are rejected,
  and so is a copy whose estimated size passes ``max_size`` (``ValueTooLarge``);
  functions, coroutines and userdata are a ``TypeError``.

Owner: the thread currently running the engine (conversion uses the state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from moonbus.lua.boundary import HostCalls, detached
from moonbus.lua.exposure import exposed_methods, returns_multiple
from moonbus.lua.fastconvert import native_converter
from moonbus.lua.lua_room import LuaRoom, lua_cost
from moonbus.lua.value_path import describe_conversion_error

__all__ = ["MAX_SIZE", "LuaConverter", "ValueTooLarge"]

_SCALARS = (bool, int, float, str, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_NATIVE_ROOTS = frozenset((list, tuple, dict))  # what the C path may take
# Values too small to need LuaRoom's free-memory check (numbers, booleans, nil:
# a copy allocates nothing beyond the stack slot lupa already reserved).
_SMALL = frozenset((bool, int, float, type(None)))
MAX_DEPTH = 64
# Largest copy of a Lua value into Python (estimated bytes, see to_py): about
# 100,000 table entries. The copy runs in Python, where the Lua time limit
# cannot stop it, so this also bounds how long one host call can take.
MAX_SIZE = 8 * 1024 * 1024
# Rough CPython sizes (64-bit) of what a converted Lua value becomes.
_STR_COST = 56
_NUMBER_COST = 32
_ENTRY_COST = 40  # a dict or list slot, plus its share of the container
_CONTAINER_COST = 72


class ValueTooLarge(TypeError):
    """A Lua value whose copy into Python would pass the conversion's size limit."""

    def __init__(self, limit: int, setting: str) -> None:
        self.limit = limit
        super().__init__(f"value is larger than the limit of {limit} bytes ({setting})")


class LuaConverter:
    """Converts values for one Lua runtime (see the module docstring)."""

    def __init__(
        self,
        runtime: Any,
        lua_type: Callable[[Any], str | None],
        build_class: Any,
        make_proxy: Any,
        unproxy: Any,
        *,
        max_depth: int = MAX_DEPTH,
        max_size: int = MAX_SIZE,
        box: Any = None,
    ) -> None:
        self._rt = runtime
        self._lua_type = lua_type
        self._build_class = build_class
        self._make_proxy = make_proxy
        self._unproxy = unproxy
        self._table_from = runtime.table_from
        self._max_depth = max_depth
        self.max_size = max_size  # the owner may change it between calls
        self.max_size_setting = "max_size"  # how its owner calls it, for messages
        # Called when a copy passes ``max_size`` (the owner counts refusals).
        self.on_too_large: Callable[[], None] | None = None
        # Around each call of a Python method from Lua (boundary.detached), set
        # by the owner before any is built: deferred delivery times them.
        self.host_calls: HostCalls | None = None
        self._classes: dict[type, Any] = {}
        self._box = box  # host_bridge.lua's BOX (see its unbox)
        # Every value copied in is first checked against the state's free memory
        # (moonbus.lua.lua_room: Lua cannot fail an allocation safely under lupa).
        self.room = LuaRoom(runtime, max_depth)
        # The C path (moonbus.lua.fastconvert): value -> new table, or None for
        # "not mine"; its to_box for method results. None: Python copies only
        # (not built, MOONBUS_PURE_PYTHON, or SandboxFactory(native=False), which
        # Runtime(native=False) makes). Owner thread only, like the rest.
        self.native: Any | None = None
        # fastconvert.native_quick_bind's bind, or None; and the one ``invoke``
        # every proxy class gets, made with the first class (_invoker).
        self._quick_bind: Any = None
        self._invoke_fn: Any = None

    def release(self) -> None:
        """Let go of every Lua object (the engine closed): Lua holds Python
        callables that lead back here, so while this held the runtime, the
        state waited for the cycle collector instead of going with the engine."""
        if self.native is not None:
            self.native.release()  # the C converter (Lua holds it: its quick calls)
        self._rt = self._build_class = self._make_proxy = self._unproxy = None
        self._table_from = self._box = self.native = None
        self._quick_bind = self._invoke_fn = None
        self._classes.clear()  # the C converter shares this dict
        self.room.release()

    def enable_native(self, lua_module: Any, state: int, quick_bind: Any = None) -> bool:
        """Use the C conversion for this runtime (``state``: its lua_State address)
        when it is built and not switched off (and the prelude gave a box);
        whether it is now in use. With ``quick_bind`` (the state's
        ``native_quick_bind``), proxies' method calls run in C too
        (``quick_invoke`` in ``_fastconvert.c``)."""
        if self._box is None:
            return False
        self.native = native_converter(
            lua_module, self._rt, state, self._make_proxy, self._box, self._classes,
            self._max_depth,
        )
        self._quick_bind = quick_bind if self.native is not None else None
        return self.native is not None

    # ----------------------------------------------------------- Python -> Lua
    def to_lua(self, value: Any, _depth: int = 0) -> Any:
        """Copy ``value`` into a Lua value (tables are new every call).

        An int beyond Lua's 64-bit integers inside a table is a ``TypeError``
        (lupa reports it as an ``OverflowError``). A value that does not fit in
        the state's free memory is ``LuaValueTooLarge`` (a ``TypeError``), raised
        before anything is copied.
        """
        native = self.native
        kind = type(value)
        if native is not None and kind in _NATIVE_ROOTS and not _depth:
            try:
                table = native(value)  # built inside a lua_pcall: memory errors are safe
            except MemoryError:
                raise self._refused(value) from None
            if table is not None:
                return table
        if not _depth and kind not in _SMALL:
            self.room.admit(value)  # before lupa allocates anything (lua_room)
        try:
            return self._to_lua(value, _depth)
        except OverflowError as exc:
            raise TypeError(
                f"an integer does not fit in a Lua integer (64 bits): {exc}"
            ) from exc

    def _to_lua(self, value: Any, _depth: int = 0) -> Any:
        if isinstance(value, _SCALARS):
            return value
        if _depth > self._max_depth:
            raise TypeError(f"value nested deeper than {self._max_depth} levels (or cyclic)")
        if isinstance(value, Mapping):
            converted = {}
            for key, item in value.items():
                if not isinstance(key, (str, int, float, bool)):
                    raise TypeError(f"table key of type {type(key).__name__} cannot go to Lua")
                if isinstance(key, float) and math.isnan(key):
                    # Lua raises outside any protected call: lupa would abort the process.
                    raise TypeError("a table key is NaN (Lua tables cannot hold it)")
                converted[key] = item if isinstance(item, _SCALARS) else self._to_lua(
                    item, _depth + 1
                )
            return self._table_from(converted)
        if isinstance(value, (list, tuple)):
            return self._table_from(
                [v if isinstance(v, _SCALARS) else self._to_lua(v, _depth + 1) for v in value]
            )
        if self._lua_type(value) is not None:
            return value  # already a Lua object of this runtime (a table we built)
        methods = exposed_methods(type(value))
        if methods:
            return self._make_proxy(value, self._class_for(type(value), methods))
        raise TypeError(f"a Python {type(value).__name__} cannot be passed to Lua")

    def _class_for(self, cls: type, methods: frozenset[str]) -> Any:
        mt = self._classes.get(cls)
        if mt is None:
            mt = self._build_class(
                cls.__name__,
                self._table_from(sorted(methods)),
                self._invoker(),
                lambda a, b: a == b,
            )
            self._classes[cls] = mt
        return mt

    def _invoker(self) -> Any:
        """What a proxy's method calls as ``invoke(obj, name, ...)``: the C call
        (``quick_invoke``, which hands anything unusual to ``_invoke`` or
        ``_finish_pending``) when built, else ``_invoke`` through lupa. Timed
        host calls (``host_calls``: deferred delivery) keep ``_invoke``."""
        if self._invoke_fn is None:
            native, bind = self.native, self._quick_bind
            if native is not None and bind is not None and self.host_calls is None:
                self._invoke_fn = bind(native, id(native), detached(self._invoke),
                                       detached(self._finish_pending))
            else:
                self._invoke_fn = detached(self._invoke, self.host_calls)  # (lua.boundary)
        return self._invoke_fn

    def _invoke(self, obj: Any, name: str, *args: Any) -> Any:
        method = getattr(obj, name)
        if args:  # scalars are what to_py returns them as: no call for them (hot path)
            to_py = self.to_py
            result = method(*[a if type(a) in _SCALAR_TYPES else to_py(a) for a in args])
        else:
            result = method()
        return self._result(obj, name, method, result, direct_tried=False)

    def _finish_pending(self) -> Any:
        """The end of a method call ``quick_invoke`` made in C: its error (raised
        here, without frames: ``detached``) or a result C did not push."""
        assert self.native is not None
        obj, name, method, result, error, tried = self.native.take_pending()
        if error is not None:
            raise error
        return self._result(obj, name, method, result, direct_tried=tried)

    def _result(self, obj: Any, name: str, method: Any, result: Any, *,
                direct_tried: bool) -> Any:
        """A host method's result for Lua (``direct_tried``: the C call already
        tried building it in one pass, as to_box does)."""
        if result is None:
            return None  # nothing to copy (an action's usual result)
        try:
            if isinstance(result, tuple) and returns_multiple(method):
                self.room.admit(result)  # all of them together
                return tuple(self.to_lua(r) for r in result)
            native = self.native
            if native is not None and type(result) in _NATIVE_ROOTS and not direct_tried:
                try:
                    if native.to_box(result):
                        return self._box  # the table is in box[1]; the method's wrapper takes it
                except MemoryError:  # raised by Lua inside the C path's lua_pcall
                    raise self._refused(result) from None
            return self.to_lua(result)
        except TypeError as exc:  # name the field that could not cross
            where = describe_conversion_error(result, "return value", exc)
            raise TypeError(f"{type(obj).__name__}:{name}(): {where}") from exc

    def _refused(self, value: Any) -> TypeError:
        # The C path ran out of Lua memory (safely, inside its lua_pcall): the
        # same error as a value the generic path refuses up front.
        return self.room.refused(lua_cost(value, 1 << 62, self._max_depth))

    # ----------------------------------------------------------- Lua -> Python
    def to_py(self, value: Any, *, max_size: int | None = None) -> Any:
        """Copy a Lua value into plain Python data (see the module docstring).

        Cycles are caught by the depth limit (a cyclic table is infinitely deep).
        The copy's estimated size in host memory (strings: their length plus
        ``_STR_COST``; numbers, table entries and tables: fixed costs close to
        CPython's) is bounded by ``max_size`` (default: the converter's
        ``max_size``): past it ``ValueTooLarge`` is raised at once, so neither
        a huge table nor a small one that holds the same table many times
        (exponentially many paths) builds up in Python.
        """
        if isinstance(value, _SCALARS):
            return value
        if max_size is not None:
            return self._to_py(value, 0, _Budget(max_size, "max_size"))
        try:
            return self._to_py(value, 0, _Budget(self.max_size, self.max_size_setting))
        except ValueTooLarge:
            if self.on_too_large is not None:
                self.on_too_large()
            raise

    def _to_py(self, value: Any, depth: int, budget: _Budget) -> Any:
        if isinstance(value, str):
            budget.spend(_STR_COST + len(value))
            return value
        if isinstance(value, _SCALARS):
            budget.spend(_NUMBER_COST)
            return value
        if isinstance(value, bytes):
            budget.spend(_STR_COST + len(value))
            return value.decode("utf-8", errors="replace")
        kind = self._lua_type(value)
        if kind == "table":
            obj = self._unproxy(value)
            if obj is not None:
                return obj
            if depth >= self._max_depth:
                raise TypeError(
                    f"table nested deeper than {self._max_depth} levels (or cyclic)"
                )
            budget.spend(_CONTAINER_COST)
            items = []
            for k, v in value.items():
                budget.spend(_ENTRY_COST)
                items.append((self._to_py(k, depth + 1, budget),
                              self._to_py(v, depth + 1, budget)))
            n = len(items)
            if n and all(type(k) is int for k, _ in items):
                items.sort(key=lambda kv: kv[0])
                if items[0][0] == 1 and items[-1][0] == n:
                    return [v for _, v in items]
            return dict(items)
        if kind is None:
            raise TypeError(f"a Python {type(value).__name__} cannot come back from Lua")
        raise TypeError(
            f"a Lua {kind} cannot be passed to the host "
            "(only nil, booleans, numbers, strings and tables can)"
        )


class _Budget:
    """What is left of one conversion's size limit (bytes, estimated)."""

    __slots__ = ("left", "limit", "setting")

    def __init__(self, limit: int, setting: str) -> None:
        self.limit = limit
        self.left = limit
        self.setting = setting

    def spend(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise ValueTooLarge(self.limit, self.setting)
