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

Connection caps (operators are never locked out by idle sockets): one
address holds at most ``max_unauthenticated_per_address`` connections that
have not logged in; a new one from that address evicts (closes) its oldest
such connection. When ``max_connections`` are open, a new connection evicts
the oldest connection that has not logged in, from any address; only when
every open connection is logged in is the newcomer refused, with one
``RESPONSE_VALUE`` (id -1) saying the server is full, then EOF. So idle or
guessing sockets can delay nobody past their auth timeout, and cannot hold a
place a logged-in admin or a newcomer with the password needs. Evicting a
connection that is serving a failure penalty frees no guess: the penalty
stays with its address.

Threads: ``start``, ``stop`` and the context manager belong to the owner's
thread (not to be called concurrently with each other); ``statistics`` and
``port`` may be read from any thread. The handler is called from pool
threads, possibly several at once, so it must be thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from types import TracebackType

from moonbus.admin.rcon_codec import (
    DEFAULT_MAX_PACKET_SIZE,
    SERVERDATA_AUTH,
    SERVERDATA_AUTH_RESPONSE,
    SERVERDATA_EXECCOMMAND,
    SERVERDATA_RESPONSE_VALUE,
    Packet,
    PacketDecoder,
    encode,
    split_response,
)
from moonbus.admin.rcon_throttle import LoginThrottle
from moonbus.errors import AdminError, ClosedError, ConfigError, MoonbusError, RconProtocolError

__all__ = ["RconServer", "RconServerStatistics"]

_log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_LISTEN_BACKLOG = 1024
_REFUSAL_LINGER = 1.0  # seconds a refused peer gets to read the notice before the socket closes
_CLOSE_GRACE = 1.0
_AUTH_PACKET_GAP = 0.005  # seconds between Source's preamble and the AUTH_RESPONSE


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
    before logging in (see the module docstring). ``clock`` feeds the login
    throttle.
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
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        if not isinstance(max_unauthenticated_per_address, int) or (
            max_unauthenticated_per_address < 1
        ):
            raise ConfigError(
                "max_unauthenticated_per_address must be an integer >= 1, "
                f"got {max_unauthenticated_per_address!r}"
            )
        if handler_threads < 1:
            raise ConfigError(f"handler_threads must be at least 1, got {handler_threads}")
        for name, value in (("idle_timeout", idle_timeout), ("auth_timeout", auth_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        PacketDecoder(max_packet_size)  # validates the limit with a clear message
        self._handler = handler
        self._password = password.encode("utf-8")
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._max_unauthenticated_per_address = max_unauthenticated_per_address
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
        self._admitted: dict[_Session, None] = {}  # open and not evicted, oldest first
        self._unauthenticated: dict[_Session, None] = {}  # of those, not logged in
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
            session = _Session(self, reader, writer, task)
            if not self._admit(session):
                self._count("connections_refused")
                await self._refuse(reader, writer)
                return
            self._count("connections_accepted")
            self._count("connections_open")
            try:
                await session.run()
            finally:
                self._admitted.pop(session, None)
                self._unauthenticated.pop(session, None)
                self._count("connections_open", -1)
        except asyncio.CancelledError:
            # stop() cancels sessions; end the task normally, because the 3.11
            # streams callback calls task.exception() and would log a cancelled task.
            pass
        finally:
            self._sessions.discard(task)

    def _admit(self, session: _Session) -> bool:
        """Make room for ``session`` by the caps in the module docstring; False
        when every open connection is logged in (the newcomer is refused)."""
        same_address = [s for s in self._unauthenticated if s.address == session.address]
        if len(same_address) >= self._max_unauthenticated_per_address:
            self._evict(same_address[0], "connections_evicted_per_address")
        if len(self._admitted) >= self._max_connections:
            oldest = next(iter(self._unauthenticated), None)
            if oldest is None:
                return False
            self._evict(oldest, "connections_evicted_server_full")
        self._admitted[session] = None
        self._unauthenticated[session] = None
        return True

    def _evict(self, session: _Session, counter: str) -> None:
        """Close a connection that has not logged in, to make room (loop thread)."""
        self._admitted.pop(session, None)
        self._unauthenticated.pop(session, None)
        self._count(counter)
        _log.debug("RCON connection from %s evicted (%s)", session.address, counter)
        session.task.cancel()

    def _logged_in(self, session: _Session, authenticated: bool) -> None:
        """A login succeeded (or a wrong password logged the connection out)."""
        if session not in self._admitted:
            return
        if authenticated:
            self._unauthenticated.pop(session, None)
        else:
            self._unauthenticated[session] = None

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
                while await reader.read(_READ_CHUNK):
                    pass
            clean = True
        except (TimeoutError, OSError):
            pass
        finally:
            await _close(writer, clean=clean)


class _PeerNotReading(Exception):
    """The peer left our answer unread for ``idle_timeout`` seconds."""


class _AuthTimedOut(Exception):
    """The connection's auth timeout ended while it waited to log in."""


class _Session:
    """One client connection. Lives on the server's loop thread.

    Hashed by identity: the server keeps sessions in insertion-ordered dicts
    to find the oldest connection that has not logged in.
    """

    def __init__(
        self,
        server: RconServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task[None],
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self.task = task
        self._decoder = PacketDecoder(server._max_packet_size)
        self._authenticated = False
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self._auth_deadline = asyncio.get_running_loop().time() + server._auth_timeout

    async def run(self) -> None:
        server = self._server
        loop = asyncio.get_running_loop()
        clean = False
        try:
            while True:
                deadline = loop.time() + server._idle_timeout
                if not self._authenticated:
                    deadline = min(deadline, self._auth_deadline)
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await self._reader.read(_READ_CHUNK)
                except TimeoutError:
                    server._count("timeouts")
                    return
                if not data:
                    self._decoder.check_complete()
                    clean = True
                    return
                answer = bytearray()
                for packet in self._decoder.feed(data):
                    if packet.type == SERVERDATA_AUTH:
                        await self._send(answer)
                        answer = bytearray(await self._login(packet))
                    else:
                        answer += await self._answer(packet)
                await self._send(answer)
        except asyncio.CancelledError:
            clean = True  # the server is stopping: a plain close, not a reset
            raise
        except (_PeerNotReading, _AuthTimedOut):
            server._count("timeouts")
        except RconProtocolError as exc:
            server._count("protocol_errors")
            _log.info("RCON connection from %s closed: %s", self.address, exc)
        except OSError as exc:
            _log.debug("RCON connection from %s failed: %s", self.address, exc)
        finally:
            await _close(self._writer, clean=clean)

    async def _send(self, data: bytes | bytearray) -> None:
        if not data:
            return
        self._writer.write(data)
        try:
            async with asyncio.timeout(self._server._idle_timeout):
                await self._writer.drain()
        except TimeoutError:
            raise _PeerNotReading from None

    async def _answer(self, packet: Packet) -> bytes:
        if not self._authenticated:
            self._server._count("unauthenticated_requests")
            return encode(Packet(-1, SERVERDATA_AUTH_RESPONSE))
        if packet.type == SERVERDATA_EXECCOMMAND:
            text = await self._execute(packet.body)
            return b"".join(encode(p) for p in split_response(packet.id, text))
        if packet.type == SERVERDATA_RESPONSE_VALUE:
            return encode(packet)  # the end-of-answer marker, mirrored
        message = f"error: unknown RCON packet type {packet.type}"
        return encode(Packet(packet.id, SERVERDATA_RESPONSE_VALUE, message.encode()))

    async def _wait_within_auth_timeout(self, seconds: float) -> None:
        """Sleep ``seconds``, but never past the auth deadline (then close)."""
        left = self._auth_deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise _AuthTimedOut
        await asyncio.sleep(min(seconds, left))

    async def _login(self, packet: Packet) -> bytes:
        server = self._server
        throttled = False
        while (wait := server._throttle.wait_before_check(self.address)) > 0:
            if not throttled:
                throttled = True
                server._count("auth_throttled")
            await self._wait_within_auth_timeout(wait)
        accepted = hmac.compare_digest(packet.body, server._password)
        if server._source_auth_preamble:
            # Two writes a moment apart, as from a Source server, so that a client
            # reading each packet through a fresh buffered reader has a chance.
            await self._send(encode(Packet(packet.id, SERVERDATA_RESPONSE_VALUE)))
            await asyncio.sleep(_AUTH_PACKET_GAP)
        if accepted:
            self._authenticated = True
            server._logged_in(self, True)
            server._throttle.record_success(self.address)
            server._count("auth_successes")
            return encode(Packet(packet.id, SERVERDATA_AUTH_RESPONSE))
        if self._authenticated:  # logged out: it gets a fresh auth timeout
            self._authenticated = False
            self._auth_deadline = asyncio.get_running_loop().time() + server._auth_timeout
            server._logged_in(self, False)
        penalty = server._throttle.record_failure(self.address)
        server._count("auth_failures")
        _log.warning("RCON login from %s refused: wrong password", self.address)
        # The failing attempt serves its penalty before it learns the answer (bounded
        # by the auth timeout: past it, the read loop closes the connection).
        left = self._auth_deadline - asyncio.get_running_loop().time()
        if penalty > 0 and left > 0:
            await asyncio.sleep(min(penalty, left))
        return encode(Packet(-1, SERVERDATA_AUTH_RESPONSE))

    async def _execute(self, body: bytes) -> str:
        server = self._server
        server._count("commands_served")
        try:
            command = body.decode("utf-8")
        except UnicodeDecodeError:
            server._count("command_errors")
            return "error: the command is not valid UTF-8"
        assert server._pool is not None
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(server._pool, server._handler, command)
        except Exception as exc:
            server._count("command_errors")
            if isinstance(exc, MoonbusError):
                return f"error: {exc}"
            _log.exception("RCON command %r raised", command)
            return f"error: {type(exc).__name__}: {exc}"
        if not isinstance(result, str):
            server._count("command_errors")
            return f"error: the command handler returned {type(result).__name__}, not str"
        return result


async def _close(writer: asyncio.StreamWriter, *, clean: bool) -> None:
    """Close a connection: flush and close when it ended cleanly, else abort."""
    if clean:
        writer.close()
    else:
        writer.transport.abort()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
