"""The settings and counters of the HTTP management API (SPEC §11).

Every limit has a default here, a line in docs/http.md and a counter in
``HttpCounters`` (``HttpServer.statistics()``, and ``app.state.http_counters``
for the metrics routes). Pure: no Starlette import, so the command line can
build settings before the optional extra is known to be installed.

Threads: ``HttpSettings`` is read-only once the app is built. ``HttpCounters``
is written by the server's event-loop thread and by its worker threads (JSON
endpoints run admin commands there), and read from any thread: every change
takes its lock.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from dataclasses import dataclass, field

from moonbus.errors import ConfigError
from moonbus.http.login_counters import LoginCounters
from moonbus.http.stream_settings import StreamSettings

__all__ = ["HttpCounters", "HttpSettings", "HttpStatistics", "check_token", "new_token"]

MAX_TOKEN_LENGTH = 512


def new_token() -> str:
    """A fresh random token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def check_token(token: str, min_length: int) -> str:
    """``token`` if it can be sent in a header and is long enough, else ``ConfigError``
    (the message never repeats the token)."""
    if not isinstance(token, str):
        raise ConfigError(f"the HTTP token must be a string, got {type(token).__name__}")
    if not min_length <= len(token) <= MAX_TOKEN_LENGTH:
        raise ConfigError(
            f"the HTTP token must be {min_length} to {MAX_TOKEN_LENGTH} characters long, "
            f"got {len(token)}"
        )
    if not all("!" <= ch <= "~" for ch in token):
        raise ConfigError("the HTTP token may hold printable ASCII characters only, no spaces")
    return token


@dataclass(frozen=True)
class HttpSettings:
    """Where the HTTP API listens, its token and its limits (see docs/http.md)."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port (``HttpServer.port`` says which)
    token: str | None = None  # None: a fresh random token (``HttpServer.token``)
    min_token_length: int = 8  # a shorter --http-token is refused at start
    max_body_bytes: int = 64 * 1024  # request bodies past this: 413 (body_too_large)
    max_inflight: int = 64  # requests served at once past this: 503 (busy)
    events_limit: int = 100  # GET /api/events without ?limit=
    max_events_limit: int = 1000  # ?limit= above this: 400 (bad_requests)
    max_export_events: int = 100_000  # one NDJSON export stops after this many (export_cut)
    auth_base_delay: float = 0.25  # penalty of an address's first wrong token (s)
    auth_max_delay: float = 10.0  # cap of the doubling penalty (s)
    auth_burst: int = 4  # wrong tokens of one address serving their penalty at once
    auth_forget_after: float = 900.0  # a quiet address's failures are forgotten (s)
    auth_max_tracked: int = 10_000  # addresses remembered (oldest forgotten first)
    auth_ipv6_prefix: int = 64  # IPv6 peers are throttled per network of this prefix
    shutdown_timeout: float = 3.0  # open connections (streams) get this long at stop (s)
    head_timeout: float = 10.0  # a connection must finish each request head this fast (s)
    max_connections: int = 256  # open at once; the oldest idle one is evicted for a newcomer
    streams: StreamSettings = field(default_factory=StreamSettings)  # live streams' limits

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"the HTTP port must be 0..65535, got {self.port}")
        if not self.host:
            raise ConfigError("the HTTP host must not be empty")
        positive = ("min_token_length", "max_body_bytes", "max_inflight", "events_limit",
                    "max_events_limit", "max_export_events", "auth_burst", "auth_max_tracked",
                    "max_connections")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"HttpSettings.{name} must be an integer >= 1, got {value!r}")
        if self.events_limit > self.max_events_limit:
            raise ConfigError(
                f"HttpSettings.events_limit ({self.events_limit}) is above max_events_limit "
                f"({self.max_events_limit})"
            )
        prefix = self.auth_ipv6_prefix
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 32 <= prefix <= 128:
            raise ConfigError(f"HttpSettings.auth_ipv6_prefix must be 32..128, got {prefix!r}")
        if not (isinstance(self.head_timeout, int | float) and 0 < self.head_timeout < 1e6):
            raise ConfigError(f"HttpSettings.head_timeout must be seconds > 0, got "
                              f"{self.head_timeout!r}")
        if not self.shutdown_timeout > 0:
            raise ConfigError(
                f"HttpSettings.shutdown_timeout must be positive, got {self.shutdown_timeout}"
            )
        if self.token is not None:
            check_token(self.token, self.min_token_length)

    def with_token(self) -> HttpSettings:
        """These settings with a token: the given one, or a fresh random one."""
        return self if self.token is not None else dataclasses.replace(self, token=new_token())


@dataclass(frozen=True)
class HttpStatistics:
    """What the HTTP API did since it started (one snapshot)."""

    requests: int  # requests answered (any status)
    logins: int  # requests that carried the right token
    unauthorized: int  # 401: no token or a wrong one
    auth_failures: int  # wrong tokens (part of ``unauthorized``; these are throttled)
    throttled: int  # 429: the address had ``auth_burst`` penalties running
    body_too_large: int  # 413: body past ``max_body_bytes``
    bad_requests: int  # 400: malformed body, bad parameter, command refused the input
    not_found: int  # 404: unknown script or path
    conflicts: int  # 409: wrong state
    unavailable: int  # 503: no event store for the command
    busy: int  # 503: ``max_inflight`` requests were being served
    export_cut: int  # NDJSON exports stopped at ``max_export_events``
    head_timeouts: int  # connections closed: no whole request head within ``head_timeout``
    connections_evicted: int  # idle or unread ones closed to make room (``max_connections``)
    connections_refused: int  # new connections closed: all ``max_connections`` busy
    internal_errors: int  # 500: a bug (logged with its traceback, never sent)


_FROM_LOGINS = ("logins", "unauthorized", "throttled")


class HttpCounters:
    """Thread-safe counters behind ``HttpStatistics``. The token checks are
    counted once, in ``logins`` (``LoginCounters``, which ``/metrics`` reads too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.logins = LoginCounters()
        self._counts = dict.fromkeys(
            (f.name for f in dataclasses.fields(HttpStatistics) if f.name not in _FROM_LOGINS), 0
        )

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (a field of ``HttpStatistics``)."""
        with self._lock:
            if name not in self._counts:
                raise KeyError(f"no HTTP counter named {name!r}")
            self._counts[name] += n

    def snapshot(self) -> HttpStatistics:
        """The counters now."""
        logins = self.logins.statistics()
        with self._lock:
            return HttpStatistics(**self._counts, logins=logins.accepted,
                                  unauthorized=logins.refused, throttled=logins.throttled)
