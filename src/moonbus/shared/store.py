"""``SharedStore``: the public face of the shared store, a namespace view over a backend.

``SharedStore()`` keeps values in this process; ``SharedStore.from_url(url)``
picks the backend from a URL (``memory://`` or ``redis://host:port/db``).
``store.namespace(name)`` returns another view over the same backend: each
script instance gets its own namespace, several scripts may be given a common
one, and Python code can open any namespace to read or change it.

Ownership: the store built by the constructor or ``from_url`` owns the backend
and closes it in ``close()``; namespace views share it and their ``close()``
does nothing to the backend (closing a view is allowed and harmless).

Thread safety: every method may be called from any thread; operations are
atomic in the backend. ``close()`` is for the owner, after the users stop.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from moonbus.errors import ConfigError
from moonbus.redisio.batch import public_url
from moonbus.shared.backend import SharedBackend
from moonbus.shared.handles import SharedBool, SharedFloat, SharedInt, SharedString, SharedTable
from moonbus.shared.memory import MemoryBackend
from moonbus.shared.values import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_STRING_BYTES,
    SharedLimits,
    check_name,
)

__all__ = ["DEFAULT_NAMESPACE", "SharedStore"]

DEFAULT_NAMESPACE: Final = "global"

# Method names below shadow builtins inside the class body.
_int = int
_float = float
_str = str
_bool = bool


def _prefix_from_url(url: _str, prefix: _str) -> tuple[_str, _str]:
    """Take a ``prefix`` query parameter out of a Redis URL (the rest goes to redis-py)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    chosen = [value for key, value in pairs if key == "prefix"]
    if not chosen:
        return url, prefix
    if len(chosen) > 1:
        raise ConfigError(f"shared store URL {public_url(url)!r}: option 'prefix' given twice")
    rest = urlencode([(key, value) for key, value in pairs if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), chosen[0]


class SharedStore:
    """Typed shared values (int, float, string, bool, table) with atomic operations.

    ``SharedStore()``: in memory. ``SharedStore.from_url("redis://127.0.0.1:6379/0")``:
    on Redis, visible to every process using the same URL and prefix.
    ``max_string_bytes`` (default 1 MiB) bounds every string in UTF-8 bytes;
    ``max_depth`` (default 32) bounds nested tables. ``native=False`` keeps a
    memory store on its pure-Python path (plain ints, no C int cells).
    """

    __slots__ = ("_backend", "_namespace", "_owner")

    def __init__(
        self,
        *,
        max_string_bytes: _int = DEFAULT_MAX_STRING_BYTES,
        max_depth: _int = DEFAULT_MAX_DEPTH,
        native: _bool = True,
    ) -> None:
        limits = SharedLimits(max_string_bytes=max_string_bytes, max_depth=max_depth)
        self._backend: SharedBackend = MemoryBackend(limits, native=native)
        self._namespace = DEFAULT_NAMESPACE
        self._owner = True

    @classmethod
    def from_url(
        cls,
        url: _str,
        *,
        prefix: _str = "moonbus",
        max_string_bytes: _int = DEFAULT_MAX_STRING_BYTES,
        max_depth: _int = DEFAULT_MAX_DEPTH,
        retry_timeout: _float = 2.0,
        native: _bool = True,
    ) -> SharedStore:
        """Open a store by URL.

        ``memory://``: in this process. ``redis://[user:password@]host:port/db``
        (also ``rediss://``, ``unix://``): every key starts with ``prefix:``
        (``?prefix=P`` in the URL overrides the argument, so a command line's
        ``--shared`` URL can choose it).
        ``retry_timeout`` bounds how long a Redis operation that is safe to
        retry keeps retrying while the server is unreachable. Raises
        ``ConfigError`` for a bad URL, ``SharedBackendError`` (naming the URL)
        when the server cannot be reached. ``native=False`` keeps a memory
        store on its pure-Python path (plain ints, no C int cells), as
        ``Runtime(native=False)`` asks.
        """
        if not isinstance(url, str):
            raise ConfigError(f"shared store URL must be a string, got {type(url).__name__}")
        limits = SharedLimits(max_string_bytes=max_string_bytes, max_depth=max_depth)
        scheme = urlsplit(url).scheme.lower()
        backend: SharedBackend
        if scheme == "memory":
            if url.rstrip("/").lower() not in ("memory:", "memory:/"):
                raise ConfigError(
                    f"shared store URL {url!r}: memory:// takes no host, path or options"
                )
            backend = MemoryBackend(limits, native=native)
        elif scheme in ("redis", "rediss", "unix"):
            url, prefix = _prefix_from_url(url, prefix)
            if not isinstance(prefix, str) or not prefix:
                raise ConfigError(f"shared store prefix must be a non-empty string, got {prefix!r}")
            try:
                from moonbus.shared.redis_backend import RedisBackend
            except ImportError as exc:  # the optional dependency is missing
                raise ConfigError(
                    f"shared store URL {url!r} needs the 'redis' package "
                    "(pip install 'moonbus[redis]')"
                ) from exc
            backend = RedisBackend(url, prefix=prefix, limits=limits, retry_timeout=retry_timeout)
        else:
            raise ConfigError(
                f"shared store URL {url!r}: unknown scheme {scheme!r} (use memory:// or redis://)"
            )
        return cls._view(backend, DEFAULT_NAMESPACE, owner=True)

    @classmethod
    def _view(cls, backend: SharedBackend, namespace: _str, *, owner: _bool) -> SharedStore:
        store = cls.__new__(cls)
        store._backend = backend
        store._namespace = namespace
        store._owner = owner
        return store

    # -- namespaces ---------------------------------------------------------

    def namespace(self, name: _str) -> SharedStore:
        """A view of namespace ``name`` over the same backend (does not own it)."""
        return self._view(self._backend, check_name(name), owner=False)

    @property
    def namespace_name(self) -> _str:
        """The namespace this view reads and writes (``"global"`` for the root store)."""
        return self._namespace

    @property
    def url(self) -> _str:
        """The backend's URL, without any password."""
        return self._backend.url

    # -- handles ------------------------------------------------------------

    def int(self, name: _str) -> SharedInt:
        """The 64-bit int ``name``; SharedTypeError if ``name`` holds another kind."""
        return self._backend.int_handle(self._namespace, check_name(name))

    def float(self, name: _str) -> SharedFloat:
        """The float ``name``; SharedTypeError if ``name`` holds another kind."""
        return self._backend.float_handle(self._namespace, check_name(name))

    def string(self, name: _str) -> SharedString:
        """The string ``name``; SharedTypeError if ``name`` holds another kind."""
        return self._backend.string_handle(self._namespace, check_name(name))

    def bool(self, name: _str) -> SharedBool:
        """The bool ``name``; SharedTypeError if ``name`` holds another kind."""
        return self._backend.bool_handle(self._namespace, check_name(name))

    def table(self, name: _str) -> SharedTable:
        """The table ``name``; SharedTypeError if ``name`` holds another kind."""
        return self._backend.table_handle(self._namespace, check_name(name))

    # -- store level --------------------------------------------------------

    def contains(self, name: _str) -> _bool:
        """True when ``name`` exists (it has been written, and not removed since)."""
        return self._backend.contains(self._namespace, check_name(name))

    def remove(self, name: _str) -> _bool:
        """Delete ``name`` whatever its kind; True when it existed."""
        return self._backend.remove(self._namespace, check_name(name))

    def clear(self) -> None:
        """Delete every name of this namespace (other namespaces are untouched)."""
        self._backend.clear(self._namespace)

    def names(self) -> list[_str]:
        """The existing names of this namespace, sorted."""
        return self._backend.names(self._namespace)

    def dump(self) -> dict[_str, Any]:
        """Every value of this namespace as plain Python data (tables as dicts), by name."""
        return self._backend.dump(self._namespace)

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Close the backend if this store owns it (views leave it open)."""
        if self._owner:
            self._backend.close()

    def __enter__(self) -> SharedStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> _str:
        return f"<SharedStore {self._backend.url} namespace={self._namespace!r}>"
