"""Every error moonbus raises, as one tree.

Foreign errors (lupa, redis, sqlite3, socket) are translated at the boundary
with ``raise ... from exc`` so that callers only ever need to catch these::

    MoonbusError
    ├── ClosedError                      closed by its owner ("you closed it")
    ├── ConfigError (ValueError)         a bad URL, option or setting value
    ├── BusError
    │   ├── HandlerError                 a Python handler raised (logged; never raised by emit)
    │   ├── CascadeError                 an emit from a handler passed a cascade limit (refused)
    │   └── EventDataError (TypeError)   emit got a value that is not event data; names the field
    ├── SharedError
    │   ├── SharedTypeError (TypeError)  a key used with another kind; names key and both kinds
    │   ├── SharedValueError (ValueError) overflow, size limit, depth limit, cycles, bad value
    │   └── SharedBackendError           the backend broke (Redis unreachable...) ("it broke")
    ├── ScriptError                      a Lua script failed (compile or run); carries file:line
    │   ├── ScriptSyntaxError            the source does not compile
    │   ├── ScriptSourceTooLarge         a source over the compile size cap (max_source_bytes)
    │   ├── ScriptTimeout (TimeoutError) a call ran past its CPU-time limit; cannot be swallowed
    │   ├── ScriptMemoryError (MemoryError) the engine ran out of its memory budget
    │   ├── ScriptCancelled              a running job was cancelled from outside
    │   └── ScriptLimitError             a script went past a host-side cap (stats, emit size...)
    ├── StoreError                       the durable event store failed (file, lock, corruption)
    ├── GameApiError (ValueError)        a game API (demo world) was called with a bad argument
    ├── AdminError                       an admin command failed or got bad arguments
    │   ├── AdminAuthError               wrong or missing RCON password
    │   ├── AdminNotFoundError           the command names a script that does not exist (HTTP 404)
    │   ├── AdminStateError              the target is in the wrong state for it (HTTP 409)
    │   ├── AdminUnavailableError        it needs a part this host lacks, e.g. a store (HTTP 503)
    │   └── RconProtocolError            a peer broke the RCON wire format (bad/oversized packet)
    └── RunnerError
        ├── RunnerClosedError (ClosedError)  submit after close
        ├── RunnerBusyError              no queue slot within acquire_timeout
        └── JobDataError (TypeError)     job args or results that cannot cross as plain data
"""

from __future__ import annotations

__all__ = [
    "AdminAuthError",
    "AdminError",
    "AdminNotFoundError",
    "AdminStateError",
    "AdminUnavailableError",
    "BusError",
    "CascadeError",
    "ClosedError",
    "ConfigError",
    "EventDataError",
    "GameApiError",
    "HandlerError",
    "JobDataError",
    "MoonbusError",
    "RconProtocolError",
    "RunnerBusyError",
    "RunnerClosedError",
    "RunnerError",
    "ScriptCancelled",
    "ScriptError",
    "ScriptLimitError",
    "ScriptMemoryError",
    "ScriptSourceTooLarge",
    "ScriptSyntaxError",
    "ScriptTimeout",
    "SharedBackendError",
    "SharedError",
    "SharedTypeError",
    "SharedValueError",
    "StoreError",
]


class MoonbusError(Exception):
    """Root of every error raised by moonbus."""


class ClosedError(MoonbusError):
    """The object was closed by its owner and cannot be used any more."""


class ConfigError(MoonbusError, ValueError):
    """A URL, option or setting has a bad value."""


class BusError(MoonbusError):
    """Event bus misuse (bad type name, bad pattern, waiting on a closed bus)."""


class HandlerError(BusError):
    """A subscriber raised; recorded by the bus, never raised out of ``emit``."""


class CascadeError(BusError):
    """An emit from a handler would pass a cascade limit (``max_cascade_depth``,
    ``max_cascade_events``): it is refused, nothing is committed (SPEC §4b)."""


class EventDataError(BusError, TypeError):
    """``emit`` was given a value that is not event data (SPEC §2); the message
    names the field, e.g. ``data.monster.pos: a Python Socket is not event data``.
    Nothing is committed."""


class SharedError(MoonbusError):
    """Base for shared-store errors."""


class SharedTypeError(SharedError, TypeError):
    """A key is used with another kind than the one it holds.

    The message names the key and both kinds, e.g.
    ``shared key 'x' holds a string, not an int``.
    """

    def __init__(self, key: str, existing: str, requested: str) -> None:
        self.key = key
        self.existing = existing
        self.requested = requested
        article = "an" if existing[:1] in "aeiou" else "a"
        req_article = "an" if requested[:1] in "aeiou" else "a"
        super().__init__(
            f"shared key {key!r} holds {article} {existing}, not {req_article} {requested}"
        )

    def __reduce__(self) -> tuple[type[SharedTypeError], tuple[str, str, str]]:
        return (type(self), (self.key, self.existing, self.requested))


class SharedValueError(SharedError, ValueError):
    """A value the store refuses: overflow, too large, too deep, cyclic, bad type."""


class SharedBackendError(SharedError):
    """The backend itself failed (connection lost, server error)."""


class ScriptError(MoonbusError):
    """A Lua script failed. ``where`` is ``file:line`` when known."""

    def __init__(self, message: str, *, where: str | None = None, traceback: str = "") -> None:
        self.message = message
        self.where = where
        self.lua_traceback = traceback
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_script_error, (type(self), self.message, self.where, self.lua_traceback))


def _rebuild_script_error(
    cls: type[ScriptError], message: str, where: str | None, traceback: str
) -> ScriptError:
    return cls(message, where=where, traceback=traceback)


class ScriptSyntaxError(ScriptError):
    """The Lua source does not compile."""


class ScriptSourceTooLarge(ScriptError):
    """A source is larger than the compile size cap (``max_source_bytes``); it was
    refused before parsing. The message names its size and the limit."""


class ScriptTimeout(ScriptError, TimeoutError):
    """A Lua call ran past its CPU-time limit and was aborted."""


class ScriptMemoryError(ScriptError, MemoryError):
    """A Lua engine ran out of its memory budget."""


class ScriptCancelled(ScriptError):
    """A running Lua call was aborted because its job was cancelled."""


class ScriptLimitError(ScriptError):
    """A script went past a host-side memory cap (SPEC §4b): stats keys or value
    size, emitted event size, the deferred queue. The message names the limit
    and the setting that changes it."""


class StoreError(MoonbusError):
    """The durable event store failed: unreadable, locked or corrupt file, lost server.

    ``kind`` sorts failures for the store's counters (``statistics().append_failures``):
    ``disk_full``, ``locked``, ``read_only``, ``io``, ``corrupt``, ``unreachable``
    (Redis away past the retry window), ``lost_reply`` (the connection broke
    after sending), ``refused`` (an error reply), ``data_loss`` (the server
    lost its data), ``other``.
    """

    def __init__(self, message: str, *, kind: str = "other") -> None:
        self.kind = kind
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_store_error, (type(self), str(self), self.kind))


def _rebuild_store_error(cls: type[StoreError], message: str, kind: str) -> StoreError:
    return cls(message, kind=kind)


class GameApiError(MoonbusError, ValueError):
    """A game API was called with a bad argument: unknown skill, bad filter key, bad text.

    Soft failures (a depleted rock, a full inventory) are not errors: the call
    returns ``False``. This is for calls no game state could make valid.
    """


class AdminError(MoonbusError):
    """An admin command failed or was given bad arguments."""


class AdminAuthError(AdminError):
    """Authentication failed (wrong or missing password)."""


class AdminNotFoundError(AdminError):
    """An admin command named something that does not exist (a script)."""


class AdminStateError(AdminError):
    """The target of an admin command is in the wrong state for it."""


class AdminUnavailableError(AdminError):
    """An admin command needs a part this host was started without (an event store)."""


class RconProtocolError(AdminError):
    """A peer broke the Source RCON wire format: a malformed, oversized or truncated packet."""


class RunnerError(MoonbusError):
    """Base for script-runner errors."""


class RunnerClosedError(RunnerError, ClosedError):
    """The runner was closed; no more jobs are accepted."""


class RunnerBusyError(RunnerError):
    """No queue slot became free within ``acquire_timeout``."""


class JobDataError(RunnerError, TypeError):
    """A job's arguments or results are not plain data (functions, objects, cycles...).

    The message names the offending value's position, e.g. ``args[0]['pos']``.
    """
