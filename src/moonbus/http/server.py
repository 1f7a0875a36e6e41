"""``HttpServer``: the management API on uvicorn, in a background thread.

The socket is bound in ``start()`` on the caller's thread, so a port in use
is a ``ConfigError`` there and then, and ``port=0`` is known at once
(``server.port``, ``server.url``). uvicorn then serves it on its own thread
with its own event loop; ``stop()`` asks it to exit, gives open connections
(live streams) ``shutdown_timeout`` seconds, and joins the thread.

How uvicorn is configured, and why:

* ``proxy_headers=False``: ``X-Forwarded-For`` is never trusted, so the
  throttle's address is the TCP peer (see ``moonbus.http.auth``);
* ``log_config=None``: the embedding host's logging configuration is left
  alone; ``access_log=False``: no request line is logged (the token is never
  in one anyway, but query strings are the operator's business);
* ``server_header=False``; ``lifespan="on"`` (runs ``AppParts.on_close``);
  uvicorn's h11 protocol with its bounded header buffer (uvicorn's default
  16 KiB), a deadline per request head and a cap on open connections that
  evicts idle ones first (``moonbus.http.head_timeout``);
  no signal handlers (uvicorn installs none off the main thread: Ctrl-C
  stays the host's).

Importing this module needs the ``http`` extra; without it the ``ImportError``
names the pip command (``import moonbus`` never gets here).

Threads: ``start``/``stop`` from the host's control thread (``Runtime.close``
calls ``stop``); uvicorn's thread owns the event loop and everything in it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

try:
    import starlette  # noqa: F401
    import uvicorn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the moonbus HTTP API needs the 'http' extra: pip install 'moonbus[http]' ({exc})"
    ) from exc

from moonbus.errors import ConfigError
from moonbus.http.app import build_app
from moonbus.http.head_timeout import head_timeout_protocol
from moonbus.http.settings import HttpSettings, HttpStatistics

if TYPE_CHECKING:
    from moonbus.http.metrics import HasRconStatistics
    from moonbus.runner.pool import Runner
    from moonbus.runtime import Runtime

__all__ = ["HttpServer", "serve"]

_log = logging.getLogger("moonbus.http")
START_TIMEOUT = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say
    # they are TCP, and without it every answer waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """The HTTP management API of one runtime (SPEC §11)."""

    def __init__(self, rt: Runtime, settings: HttpSettings | None = None, *,
                 rcon: HasRconStatistics | None = None, runner: Runner | None = None) -> None:
        """``rcon``: the RCON server beside it (``moonbus serve``), ``runner``: a job
        pool of the same game; both only for ``/metrics``."""
        self.settings = (settings or HttpSettings()).with_token()
        self.app = build_app(rt, self.settings, rcon=rcon, runner=runner)
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def token(self) -> str:
        """The bearer token (given or generated). Show it once; never log it."""
        assert self.settings.token is not None  # with_token() set it
        return self.settings.token

    @property
    def host(self) -> str:
        """The address listened on."""
        return self.settings.host

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._port is None:
            raise ConfigError("the HTTP server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def console_url(self) -> str:
        """The console link with the token in the fragment (never sent to the server)."""
        return f"{self.url}/#token={self.token}"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def statistics(self) -> HttpStatistics:
        """The HTTP counters now (``HttpStatistics``)."""
        counters = self.app.state.http_counters
        snapshot: HttpStatistics = counters.snapshot()
        return snapshot

    def start(self) -> HttpServer:
        """Bind and serve on a background thread; returns once it accepts connections."""
        if self._thread is not None:
            raise ConfigError("the HTTP server is already started")
        try:
            self._sock = _bind(self.settings.host, self.settings.port)
        except ConfigError:
            self.app.state.parts.close()  # no loop will ever run the closers
            raise
        self._port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, proxy_headers=False,
            server_header=False, lifespan="on", loop="asyncio",
            http=head_timeout_protocol(self.settings.head_timeout,
                                       lambda: self.app.state.http_counters.add("head_timeouts"),
                                       max_connections=self.settings.max_connections,
                                       count=self.app.state.http_counters.add),
            timeout_graceful_shutdown=math.ceil(self.settings.shutdown_timeout),
        )
        self._server = uvicorn.Server(config)
        server, sock = self._server, self._sock
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]),
                                        name="moonbus-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError("the HTTP server did not start (see the log)")
            time.sleep(0.01)
        _log.info("HTTP management API on %s", self.url)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving; returns within about ``shutdown_timeout`` + 2 s (or ``timeout``)."""
        server, thread, sock = self._server, self._thread, self._sock
        loop = self.app.state.parts.loop
        if thread is not None and thread.is_alive() and loop is not None:
            # End live streams first: uvicorn waits for open connections before
            # its lifespan shutdown would close them.
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self.app.state.parts.close)
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(self.settings.shutdown_timeout + 2.0 if timeout is None else timeout)
            if thread.is_alive():
                server.force_exit = True  # type: ignore[union-attr]
                thread.join(1.0)
            if thread.is_alive():
                _log.warning("the HTTP server thread did not end in time")
        if thread is None or not thread.is_alive():
            self.app.state.parts.close()  # what the loop did not run (it never ran, or died)
        if sock is not None:
            sock.close()
        self._thread = None
        self._server = None
        self._sock = None

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(rt: Runtime, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
          rcon: HasRconStatistics | None = None, runner: Runner | None = None,
          **limits: Any) -> HttpServer:
    """Start the HTTP API for ``rt`` on a background thread and return the server
    (``Runtime.serve_http``); ``limits`` are further ``HttpSettings`` fields;
    ``rcon`` and ``runner`` (an RCON server, a job pool) add their figures to ``/metrics``."""
    settings = HttpSettings(host=host, port=port, token=token, **limits)
    return HttpServer(rt, settings, rcon=rcon, runner=runner).start()
