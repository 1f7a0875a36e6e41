"""The admin RCON server: Source RCON over TCP, answered by a Python callable.

Why its own thread and event loop: the host (a game loop, ``moonbus serve``)
must not be slowed or restructured by admin traffic, and a hostile peer must
not be able to hurt it. One background thread runs an asyncio loop that owns
every socket; commands run in a small thread pool (``handler_threads``) so a
slow admin command never stalls other connections or the loop.

Protocol behaviour (as Source does it):

* ``SERVERDATA_AUTH``: answered by an ``AUTH_RESPONSE`` carrying the request
  id, or -1 when the password is wrong. Comparison is constant-time; failures
  from one address are slowed down without queueing anyone else's login
  (:class:`~moonbus.admin.rcon_throttle.LoginThrottle`: a wrong password is
  answered only after its penalty, a correct one at once; see there for the
  guess-rate bound). Every such wait ends by the connection's auth timeout.
  Source servers send
  an empty ``RESPONSE_VALUE`` first; that preamble is off by default
  (``source_auth_preamble``) because the standard clients misread it: mcrcon
  reads one packet and takes it as success even for a wrong password, then
  reads every answer one command late; the ``rcon`` package drops the
  ``AUTH_RESPONSE`` when both arrive in one TCP segment. Clients written for
  Source read until the ``AUTH_RESPONSE``, so they work either way.
* ``SERVERDATA_EXECCOMMAND`` before a successful login: ``AUTH_RESPONSE`` -1.
  After it: the handler's answer as one or more ``RESPONSE_VALUE`` packets
  with the request id (bodies of at most 4096 bytes). A handler that raises
  answers ``error: <message>``; the connection lives on.
* An empty ``RESPONSE_VALUE`` from the client (the end-of-answer marker) is
  mirrored back unchanged, after the answer it follows. No trailing
  ``\\x00\\x01\\x00\\x00`` packet is sent: the ``rcon`` package reads exactly one
  packet after its marker, and a second one would desynchronise it.
* A malformed, oversized, garbage or truncated packet, an idle connection
  (``idle_timeout``) or one that has not logged in within ``auth_timeout``
  is closed; nothing else is touched.

Connection caps (operators are never locked out by idle sockets; see
:mod:`moonbus.admin.rcon_admission`): ``max_unauthenticated_per_address``
connections not logged in per address, ``max_connections`` in all; a
newcomer evicts the oldest connection not logged in, and is refused (one
``RESPONSE_VALUE``, id -1, saying the server is full, then EOF) only when
every open connection is logged in. Evicting a connection that is serving a
failure penalty frees no guess: the penalty stays with its address.
Connections are served by :class:`~moonbus.admin.rcon_session.Session`.

Threads: ``start``, ``stop`` and the context manager belong to the owner's
thread (not to be called concurrently with each other); ``statistics`` and
``port`` may be read from any thread. The handler is called from pool
threads, possibly several at once, so it must be thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from types import TracebackType

from moonbus.admin.rcon_admission import Admission
from moonbus.admin.rcon_codec import (
    DEFAULT_MAX_PACKET_SIZE,
    SERVERDATA_RESPONSE_VALUE,
    Packet,
    PacketDecoder,
    encode,
)
from moonbus.admin.rcon_session import READ_CHUNK, Session, close_connection
from moonbus.admin.rcon_throttle import LoginThrottle
from moonbus.errors import AdminError, ClosedError, ConfigError

__all__ = ["RconServer", "RconServerStatistics"]

_log = logging.getLogger(__name__)

_LISTEN_BACKLOG = 1024
_REFUSAL_LINGER = 1.0  # seconds a refused peer gets to read the notice before the socket closes


@dataclass(frozen=True)
class RconServerStatistics:
    """A snapshot of the server's counters (since ``start``)."""

    connections_open: int
    connections_accepted: int
    connections_refused: int
    connections_evicted_per_address: int
    connections_evicted_server_full: int
    commands_served: int
    command_errors: int
    auth_successes: int
    auth_failures: int
    auth_throttled: int
    unauthenticated_requests: int
    protocol_errors: int
    timeouts: int


@dataclass
class _Counters:
    connections_open: int = 0
    connections_accepted: int = 0
    connections_refused: int = 0
    connections_evicted_per_address: int = 0
    connections_evicted_server_full: int = 0
    commands_served: int = 0
    command_errors: int = 0
    auth_successes: int = 0
    auth_failures: int = 0
    auth_throttled: int = 0
    unauthenticated_requests: int = 0
    protocol_errors: int = 0
    timeouts: int = 0


class RconServer:
    """A Source RCON server that answers each command with ``handler(command)``.

    ``port=0`` binds an ephemeral port; read the real one from :attr:`port`
    after :meth:`start`. ``password`` is required and may not be empty.
    ``max_packet_size`` bounds the ``size`` field of incoming packets (Source's
    4096, i.e. commands of up to 4086 bytes). ``auth_failure_delay`` is the
    penalty of the first failed login from an address; it doubles per failure
    up to ``auth_failure_max_delay``; ``auth_failure_burst`` failures of one
    address may serve their penalty at once before further attempts from it
    wait (see :class:`~moonbus.admin.rcon_throttle.LoginThrottle`).
    ``max_unauthenticated_per_address`` caps the connections one address holds
    before logging in (see the module docstring). An "address" for the login
    throttle and that cap is an IPv4 address or an IPv6 *network* of
    ``auth_ipv6_prefix`` bits (default /64, what one host or site is usually
    given: otherwise one machine could rotate through 2^64 addresses and get
    a fresh budget of guesses and connections with each). ``clock`` feeds the
    login throttle.
    ``source_auth_preamble`` sends Source's empty ``RESPONSE_VALUE`` before each
    ``AUTH_RESPONSE`` (for clients that insist on it; see the module docstring).
    """

    def __init__(
        self,
        handler: Callable[[str], str],
        *,
        password: str | None,
        host: str = "127.0.0.1",
        port: int = 27015,
        max_connections: int = 64,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        idle_timeout: float = 300.0,
        auth_timeout: float = 10.0,
        auth_failure_delay: float = 0.25,
        auth_failure_max_delay: float = 10.0,
        auth_failure_burst: int = 4,
        max_unauthenticated_per_address: int = 8,
        auth_ipv6_prefix: int = 64,
        handler_threads: int = 4,
        source_auth_preamble: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(handler):
            raise ConfigError(f"RCON handler must be callable, got {type(handler).__name__}")
        if not isinstance(password, str) or not password:
            raise ConfigError("an RCON password is required; the server never runs without one")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"RCON port must be 0..65535, got {port!r}")
        self._admission: Admission[Session] = Admission(
            max_connections=max_connections, per_address=max_unauthenticated_per_address
        )  # owned by the loop thread once started
        if handler_threads < 1:
            raise ConfigError(f"handler_threads must be at least 1, got {handler_threads}")
        for name, value in (("idle_timeout", idle_timeout), ("auth_timeout", auth_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        PacketDecoder(max_packet_size)  # validates the limit with a clear message
        if not isinstance(auth_ipv6_prefix, int) or not 32 <= auth_ipv6_prefix <= 128:
            raise ConfigError(f"auth_ipv6_prefix must be 32..128, got {auth_ipv6_prefix!r}")
        self._ipv6_prefix = auth_ipv6_prefix
        self._handler = handler
        self._password = password.encode("utf-8")
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._max_packet_size = max_packet_size
        self._idle_timeout = float(idle_timeout)
        self._auth_timeout = float(auth_timeout)
        self._handler_threads = handler_threads
        self._source_auth_preamble = source_auth_preamble
        self._throttle = LoginThrottle(
            base_delay=auth_failure_delay,
            max_delay=auth_failure_max_delay,
            burst=auth_failure_burst,
            clock=clock,
        )
        self._counters = _Counters()
        self._counters_lock = threading.Lock()
        # Owned by the loop thread once started:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        # Owned by the owner's thread:
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stopped = False

    # -- owner's thread -------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._port

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._host

    def start(self) -> None:
        """Bind and start serving; returns once the socket is listening."""
        if self._stopped:
            raise ClosedError("this RCON server was stopped; build a new one")
        if self._thread is not None:
            raise AdminError("this RCON server is already running")
        self._pool = ThreadPoolExecutor(
            max_workers=self._handler_threads, thread_name_prefix="moonbus-rcon-command"
        )
        self._thread = threading.Thread(target=self._run_loop, name="moonbus-rcon", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._pool.shutdown(wait=False)
            self._stopped = True
            raise AdminError(
                f"cannot listen for RCON on {self._host}:{self._port}: {self._startup_error}"
            ) from self._startup_error

    def stop(self) -> None:
        """Close the listener and every connection, then join the loop thread.

        A command still running in the pool finishes there; its answer is dropped.
        Calling ``stop`` again, or before ``start``, does nothing.
        """
        if self._stopped or self._thread is None:
            self._stopped = True
            return
        self._stopped = True
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop_requested.set)
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RconServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- any thread -----------------------------------------------------

    def statistics(self) -> RconServerStatistics:
        """A consistent snapshot of the counters."""
        with self._counters_lock:
            values = {f.name: getattr(self._counters, f.name) for f in fields(_Counters)}
        return RconServerStatistics(**values)

    def _count(self, name: str, delta: int = 1) -> None:
        """Add to one counter (any thread; sessions call it from the loop thread)."""
        with self._counters_lock:
            setattr(self._counters, name, getattr(self._counters, name) + delta)

    # -- loop thread ----------------------------------------------------

    def _run_loop(self) -> None:
        loop = asyncio.SelectorEventLoop()  # on every platform: stop() uses remove_reader
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as exc:  # surfaces in start() instead of dying silently
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                _log.exception("RCON server loop failed")
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, loop: asyncio.SelectorEventLoop) -> None:
        self._loop = loop
        self._stop_requested = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._on_connect, self._host, self._port, backlog=_LISTEN_BACKLOG
            )
        except OSError as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            # Stop accepting first and let connections accepted in this tick be set
            # up (they see the stop request and close). Closing the listener while
            # such a connection is half-accepted leaks its socket in asyncio 3.11;
            # connections still queued in the kernel are reset when it closes.
            for listener in server.sockets:
                loop.remove_reader(listener.fileno())
            await self._end_sessions()
            server.close()
            await server.wait_closed()

    async def _end_sessions(self) -> None:
        # Every other task on this loop is a connection. Ones accepted just before
        # the listener closed may not have started yet: they are left to start,
        # see the stop request and close; running ones are cancelled.
        current = asyncio.current_task()
        while True:
            await asyncio.sleep(0)
            others = [task for task in asyncio.all_tasks() if task is not current]
            if not others:
                return
            for task in self._sessions:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            if self._stop_requested is not None and self._stop_requested.is_set():
                writer.transport.abort()
                return
            session = Session(self, reader, writer, task)
            decision = self._admission.admit(session, session.bucket)
            for evicted, reason in decision.evicted:
                self._count(f"connections_evicted_{reason}")
                _log.debug("RCON connection from %s evicted (%s)", evicted.address, reason)
                evicted.task.cancel()
            if not decision.admitted:
                self._count("connections_refused")
                await self._refuse(reader, writer)
                return
            self._count("connections_accepted")
            self._count("connections_open")
            try:
                await session.run()
            finally:
                self._admission.close(session)
                self._count("connections_open", -1)
        except asyncio.CancelledError:
            # stop() cancels sessions; end the task normally, because the 3.11
            # streams callback calls task.exception() and would log a cancelled task.
            pass
        finally:
            self._sessions.discard(task)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        notice = f"server full: {self._max_connections} RCON connections are open; try later"
        clean = False
        try:
            writer.write(encode(Packet(-1, SERVERDATA_RESPONSE_VALUE, notice.encode())))
            if writer.can_write_eof():
                writer.write_eof()
            # Read (and drop) what the peer sends until it closes, so closing our
            # side does not reset the connection before the notice is read.
            async with asyncio.timeout(_REFUSAL_LINGER):
                while await reader.read(READ_CHUNK):
                    pass
            clean = True
        except (TimeoutError, OSError):
            pass
        finally:
            await close_connection(writer, clean=clean)
