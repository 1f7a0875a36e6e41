"""Marking Python classes whose methods Lua scripts may call.

Lua never sees a raw Python object. A host API object (the demo world's
``players``, a player, an inventory item...) reaches Lua as a proxy table whose
methods call back into exactly the names listed here; everything else on the
object (``__class__``, ``__dict__``, private attributes, inherited ``object``
methods) does not exist from Lua's point of view.

Use::

    @lua_api
    class Player:
        def name(self) -> str: ...
        def x(self) -> int: ...

Public methods (no leading underscore) defined on the class or its bases
(except ``object``) are exposed. Arguments arrive converted from Lua (tables →
``dict``/``list``), return values are converted back (``dict``/``list``/``tuple``
→ tables, other ``@lua_api`` objects → proxies). A method may return a tuple to
give several Lua results only when decorated with ``@lua_multi``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["exposed_methods", "is_lua_api", "lua_api", "lua_multi", "returns_multiple"]

_C = TypeVar("_C", bound=type)
_F = TypeVar("_F", bound=Callable[..., Any])

_METHODS_ATTR = "__moonbus_lua_methods__"
_MULTI_ATTR = "__moonbus_lua_multi__"


def lua_api(cls: _C) -> _C:
    """Class decorator: expose the class's public methods to Lua scripts."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, member in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(member):
                names.add(name)
    setattr(cls, _METHODS_ATTR, frozenset(names))
    return cls


def lua_multi(func: _F) -> _F:
    """Method decorator: a returned tuple becomes several Lua return values."""
    setattr(func, _MULTI_ATTR, True)
    return func


def is_lua_api(obj: object) -> bool:
    """True when ``obj`` is an instance of a ``@lua_api`` class."""
    return any(_METHODS_ATTR in vars(k) for k in type(obj).__mro__)


def exposed_methods(cls: type) -> frozenset[str]:
    """The method names Lua may call on instances of ``cls`` (empty if not exposed)."""
    for klass in cls.__mro__:
        found = vars(klass).get(_METHODS_ATTR)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return frozenset()


def returns_multiple(method: Callable[..., Any]) -> bool:
    """True when ``method`` was marked with ``@lua_multi``."""
    return bool(getattr(getattr(method, "__func__", method), _MULTI_ATTR, False))
