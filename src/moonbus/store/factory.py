"""Choosing an event-store backend from a URL.

Accepted forms::

    sqlite:///relative/path.db        relative to the current directory
    sqlite:////abs/path.db            absolute
    sqlite://:memory:                 (also sqlite:///:memory:) in-memory, this process only
    path/to/file.db                   a plain path means SQLite
    ...?mode=durable                  SQLite options as query parameters:
                                      mode=journal|durable|fast (a file's default:
                                      journal; :memory:'s: durable; see
                                      ``moonbus.store.sqlite``), sync=normal|full,
                                      batch_size=N, flush_interval=SECONDS,
                                      lock_timeout=SECONDS, journal_bytes=N
    redis://[user:password@]host:port/db?prefix=P
                                      the Redis Streams backend (also rediss://);
                                      options: prefix (default moonbus),
                                      retry_timeout=SECONDS, prune_every=N,
                                      prune_tick_step=N, transit_keep=N,
                                      max_events=N

``open_event_reader`` opens a store only to read it (``moonbus events --db``,
offline admin): an SQLite file through ``SqliteFileReader`` (read-only,
exact schema, bounded work; option ``lock_timeout`` only), a Redis URL as
``open_event_store`` does (reading a stream writes nothing).

Adding a backend means adding one entry to ``_OPENERS``: a function from the
parsed URL to an ``EventStore``. Each backend's imports stay inside its opener.
Bad URLs and options raise ``ConfigError`` naming the URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote

from moonbus.errors import ConfigError
from moonbus.redisio.batch import public_url
from moonbus.store.base import EventStore, StoreSettings

__all__ = ["open_event_reader", "open_event_store"]

Opener = Callable[[str, str, dict[str, str], StoreSettings | None, bool], EventStore]


def _sqlite_path(url: str, rest: str) -> str:
    """The file path from what follows ``sqlite:``."""
    if rest in ("//:memory:", "///:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("//"):
        raise ConfigError(f"event store URL {url!r}: expected sqlite:///path or sqlite://:memory:")
    path = rest[2:]
    if not path.startswith("/"):
        raise ConfigError(
            f"event store URL {url!r}: expected sqlite:///relative.db, sqlite:////abs.db "
            "or sqlite://:memory: (a host name is not allowed)"
        )
    path = unquote(path[1:])
    if not path:
        raise ConfigError(f"event store URL {url!r} names no file")
    return path


def _number(url: str, key: str, text: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"event store URL {url!r}: {key}={text!r} is not a number") from None
    return value


def _open_sqlite(
    url: str, rest: str, options: dict[str, str], settings: StoreSettings | None, create: bool
) -> EventStore:
    return _sqlite_store(url, _sqlite_path(url, rest), options, settings, create)


def _sqlite_store(
    url: str, path: str, options: dict[str, str], settings: StoreSettings | None, create: bool
) -> EventStore:
    from moonbus.store.sqlite import SqliteEventStore

    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key == "mode":
            if value not in ("durable", "fast", "journal"):
                raise ConfigError(
                    f"event store URL {url!r}: mode must be durable, fast or journal"
                )
            kwargs["mode"] = value
        elif key == "sync":
            if value not in ("normal", "full"):
                raise ConfigError(f"event store URL {url!r}: sync must be normal or full")
            kwargs["synchronous"] = value
        elif key in ("batch_size", "journal_bytes"):
            kwargs[key] = _number(url, key, value, int)
        elif key in ("flush_interval", "lock_timeout"):
            kwargs[key] = _number(url, key, value, float)
        else:
            raise ConfigError(
                f"event store URL {url!r}: unknown option {key!r} "
                "(known: batch_size, flush_interval, journal_bytes, lock_timeout, mode, sync)"
            )
    return SqliteEventStore(path, settings=settings, create=create, **kwargs)


_REDIS_INTS = ("prune_every", "prune_tick_step", "transit_keep", "max_events")


def _open_redis(
    url: str, rest: str, options: dict[str, str], settings: StoreSettings | None, create: bool
) -> EventStore:
    try:
        from moonbus.store.redis_backend import RedisEventStore
    except ImportError as exc:  # the optional dependency is missing
        raise ConfigError(
            f"event store URL {public_url(url)!r} needs the 'redis' package "
            "(pip install 'moonbus[redis]')"
        ) from exc
    shown = public_url(url)
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key == "prefix":
            if not value:
                raise ConfigError(f"event store URL {shown!r}: prefix must be a non-empty string")
            kwargs["prefix"] = value
        elif key == "retry_timeout" or key in _REDIS_INTS:
            kind = float if key == "retry_timeout" else int
            kwargs[key] = number = _number(shown, key, value, kind)
            if not number >= 0:
                raise ConfigError(f"event store URL {shown!r}: {key} must be a number >= 0")
        else:
            raise ConfigError(
                f"event store URL {shown!r}: unknown option {key!r} "
                f"(known: prefix, retry_timeout, {', '.join(_REDIS_INTS)})"
            )
    scheme = url.partition(":")[0]
    # Create or not, a Redis store makes nothing until the first append.
    return RedisEventStore(f"{scheme}:{rest}", settings=settings, **kwargs)


_OPENERS: Mapping[str, Opener] = MappingProxyType(
    {"sqlite": _open_sqlite, "redis": _open_redis, "rediss": _open_redis}
)


def open_event_store(
    url: str, settings: StoreSettings | None = None, *, create: bool = True
) -> EventStore:
    """Open the event store a URL (or plain SQLite file path) names.

    ``create=False`` refuses to create a missing file (for readers such as
    ``moonbus events --db``).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"event store URL must be a non-empty string, not {url!r}")
    scheme, _, remainder = url.partition(":")
    scheme = scheme.lower()
    opener = _OPENERS.get(scheme)
    if opener is None and "://" not in url:
        # A plain path, taken as it is: "?", "#" or "%" in a file name stay part of it.
        return _sqlite_store(url, url, {}, settings, create)
    if opener is None:
        raise ConfigError(
            f"event store URL {url!r}: unknown scheme {scheme!r} "
            f"(known: {', '.join(sorted(_OPENERS))})"
        )
    rest, _, query = remainder.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"event store URL {public_url(url)!r}: malformed query string") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise ConfigError(f"event store URL {public_url(url)!r}: option {key!r} given twice")
        options[key] = value
    return opener(url, rest, options, settings, create)


def open_event_reader(url: str, *, max_seconds: float | None = None) -> EventStore:
    """Open the store a URL (or plain SQLite file path) names, for reading only.

    An SQLite file must exist and hold exactly a moonbus store; it is never
    changed, and each read stops with a ``StoreError`` after ``max_seconds``
    (default: ``SqliteFileReader``'s). See the module docstring.
    """
    from moonbus.store.sqlite_file_reader import DEFAULT_READ_SECONDS, SqliteFileReader

    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"event store URL must be a non-empty string, not {url!r}")
    scheme, _, remainder = url.partition(":")
    if scheme.lower() != "sqlite" and "://" in url:
        return open_event_store(url, create=False)
    options: dict[str, str] = {}
    path = url
    if scheme.lower() == "sqlite":
        rest, _, query = remainder.partition("?")
        path = _sqlite_path(url, rest)
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        except ValueError:
            raise ConfigError(f"event store URL {url!r}: malformed query string") from None
    unknown = set(options) - {"lock_timeout"}
    if unknown:
        raise ConfigError(
            f"event store URL {url!r}: option(s) {', '.join(sorted(unknown))} do not apply "
            "when reading (known: lock_timeout)"
        )
    lock_timeout = 5.0
    if "lock_timeout" in options:
        lock_timeout = _number(url, "lock_timeout", options["lock_timeout"], float)
    seconds = DEFAULT_READ_SECONDS if max_seconds is None else max_seconds
    return SqliteFileReader(path, max_seconds=seconds, lock_timeout=lock_timeout)
