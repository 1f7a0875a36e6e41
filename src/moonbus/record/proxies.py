"""Stand-ins for host API objects: one that records each call, one that answers from a file.

Lua reaches a host object only through the public methods of its
``@lua_api`` class (``moonbus.lua.exposure``), so a stand-in is a generated
``@lua_api`` class with the same name and the same method names (``@lua_multi``
kept), whose every method calls one function: ``handler(proxy, method, args)``.
The recorder's handler forwards to the real object and logs the call; the
replayer's answers from the recording. Scripts cannot tell either from the
real object: same methods, same class name in messages.

Classes are made per ``ProxyClasses`` (one per recorder or replay), never in
a module-level cache. A proxy's ``__moonbus_json__`` is what the event store
writes for it (the real object's JSON form), so an event store beside a
recording keeps what it kept without one.

Threads: a proxy is called by whichever thread runs the script's engine; the
handler does its own locking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from moonbus.lua.exposure import lua_api, lua_multi

__all__ = ["CallHandler", "ProxyBase", "ProxyClasses"]

CallHandler = Callable[["ProxyBase", str, tuple[Any, ...]], Any]


class ProxyBase:
    """A host object's stand-in: its id in the recording, plus what answers for it."""

    __slots__ = ("__weakref__", "_handler", "_json", "_rec_id", "_script", "_target")

    def __init__(self, rec_id: int, handler: CallHandler, target: Any = None,
                 json_form: Any = None, script: str | None = None) -> None:
        # Underscored: a host class may well have a public method named ``target``.
        self._rec_id = rec_id
        self._target = target  # the real object while recording; None in a replay
        self._handler = handler
        self._script = script  # whose stand-in this is (None: shared, e.g. in an event)
        self._json = json_form

    def __moonbus_json__(self) -> Any:
        if self._target is not None:
            from moonbus.bus.event import to_jsonable

            return to_jsonable(self._target)
        return self._json

    @staticmethod
    def id_of(proxy: ProxyBase) -> int:
        return proxy._rec_id

    @staticmethod
    def script_of(proxy: ProxyBase) -> str | None:
        return proxy._script

    @staticmethod
    def target_of(proxy: ProxyBase) -> Any:
        return proxy._target

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self._rec_id}>"


def _method(name: str, multi: bool) -> Callable[..., Any]:
    def method(self: ProxyBase, *args: Any) -> Any:
        return self._handler(self, name, args)

    method.__name__ = method.__qualname__ = name
    return lua_multi(method) if multi else method


class ProxyClasses:
    """Generated stand-in classes, by class name (see the module docstring)."""

    def __init__(self) -> None:
        self._classes: dict[str, type[ProxyBase]] = {}

    def get(self, name: str, methods: Iterable[str], multi: Iterable[str]) -> type[ProxyBase]:
        """The stand-in class for host class ``name`` (made on first use)."""
        cls = self._classes.get(name)
        if cls is None:
            multi_set = set(multi)
            namespace: dict[str, Any] = {"__slots__": ()}
            for method in methods:
                namespace[method] = _method(method, method in multi_set)
            cls = lua_api(type(name, (ProxyBase,), namespace))
            self._classes[name] = cls
        return cls
