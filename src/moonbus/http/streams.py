"""Live streams (Server-Sent Events): committed events and script log lines.

``GET /api/stream/events?type=PATTERN`` sends each committed event as
``id: <seq>`` / ``event: event`` / ``data: <event JSON>``; ``type`` takes the
bus's patterns (``moonbus.bus.patterns``: exact, ``*``, ``prefix*``). A
``Last-Event-ID`` header (what a browser's EventSource sends on reconnect) or
``?after_seq=N`` first replays what the client missed, from the event log
(``moonbus.http.event_backlog``), with no gap and no duplicate.
``GET /api/stream/logs?level=LEVEL&tail=N`` sends log lines at ``LEVEL`` and
above (``debug`` < ``info`` < ``warn`` < ``error``) as ``event: log``, after
the last ``tail`` lines the runtime kept (``Runtime.recent_logs``).

Both send ``: ping`` comments every ``heartbeat`` seconds; a client whose
bounded buffer overflows gets ``event: dropped`` (``data: {"reason": ...}``)
and its stream ends (``moonbus.http.fanout``).

Threads: the bus handler (events) and the log sink (logs) are the hubs'
``deque.append``, run on whatever thread commits the event or writes the line
(one C call, no JSON there). The backlog is read and encoded on the server's
worker threads. Everything else (the hubs, the clients, JSON encoding of live
items, the SSE generators) runs on the server's one event loop thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from moonbus.bus.event import Event
from moonbus.bus.patterns import check_pattern, matches
from moonbus.errors import BusError
from moonbus.host.log_line import LogLine
from moonbus.http.event_backlog import encode_event, gap_frame, read_backlog
from moonbus.http.fanout import FanOut, StreamClient
from moonbus.http.stream_settings import StreamSettings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from moonbus.runtime import Runtime

__all__ = ["LOG_LEVELS", "StreamRoutes", "stream_routes"]

LOG_LEVELS = ("debug", "info", "warn", "error")  # lowest first
_RANK = {name: rank for rank, name in enumerate(LOG_LEVELS)}


def encode_log(line: LogLine) -> tuple[int, bytes]:
    """``event: log`` with ``{tick, script, engine, level, msg}`` (no id: lines have no seq)."""
    data = json.dumps(line.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return 0, f"event: log\ndata: {data}\n\n".encode()


def dropped_frame(reason: str) -> bytes:
    """The last frame of a dropped client."""
    return f"event: dropped\ndata: {json.dumps({'reason': reason})}\n\n".encode()


class StreamRoutes:
    """The two stream endpoints and their hubs, for one app (one runtime).

    Build it on any thread; the routes, ``close`` and the hubs then belong to
    the server's event loop thread. ``statistics()`` may be read anywhere.
    """

    def __init__(self, rt: Runtime, settings: StreamSettings | None = None) -> None:
        from starlette.routing import Route

        self._rt = rt
        self.settings = settings = settings or StreamSettings()
        common: dict[str, Any] = {"capacity": settings.client_buffer,
                                  "capacity_bytes": settings.client_buffer_bytes,
                                  "max_clients": settings.max_clients,
                                  "pump_interval": settings.pump_interval,
                                  "inbox": settings.inbox,
                                  "max_sends": settings.max_sends}
        self.events: FanOut[Event] = FanOut(attach=self._attach_events, encode=encode_event,
                                            **common)
        self.logs: FanOut[LogLine] = FanOut(attach=rt.add_log_sink, encode=encode_log, **common)
        self.routes: list[Route] = [
            Route("/api/stream/events", self.stream_events, methods=["GET"]),
            Route("/api/stream/logs", self.stream_logs, methods=["GET"]),
        ]

    def _attach_events(self, push: Callable[[Event], None]) -> Callable[[], None]:
        sub = self._rt.bus.on("*", push, owner="http:stream")

        def detach() -> None:
            sub.cancel()

        return detach

    def close(self) -> None:
        """End every stream and detach from the bus and the log (loop thread)."""
        self.events.close()
        self.logs.close()

    def statistics(self) -> dict[str, Any]:
        """``{"events": HubStatistics, "logs": HubStatistics}``."""
        return {"events": self.events.statistics(), "logs": self.logs.statistics()}

    # ------------------------------------------------------------ endpoints
    async def stream_events(self, request: Request) -> Response:
        """``GET /api/stream/events?type=&after_seq=`` (``Last-Event-ID``)."""
        pattern = request.query_params.get("type") or "*"
        try:
            check_pattern(pattern)
        except BusError as exc:
            return _error(400, f"bad type pattern: {exc}")
        raw = request.headers.get("last-event-id") or request.query_params.get("after_seq")
        after: int | None = None
        if raw is not None and raw.strip():
            try:
                after = int(raw)
            except ValueError:
                return _error(400, f"Last-Event-ID / after_seq must be a seq number, got {raw!r}")
            if after < 0:
                return _error(400, f"Last-Event-ID / after_seq must be >= 0, got {after}")
        if self.events.full:
            self.events.refuse()
            return _error(503, f"too many event streams open (max {self.settings.max_clients})")

        def wants(event: Event) -> bool:
            return matches(pattern, event.type)

        return self._respond(self._event_frames(None if pattern == "*" else wants, pattern,
                                                after))

    async def stream_logs(self, request: Request) -> Response:
        """``GET /api/stream/logs?level=&tail=``."""
        level = (request.query_params.get("level") or "debug").lower()
        if level == "warning":
            level = "warn"
        if level not in _RANK:
            return _error(400, f"level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        raw_tail = request.query_params.get("tail") or "0"
        try:
            tail = int(raw_tail)
        except ValueError:
            return _error(400, f"tail must be a whole number, got {raw_tail!r}")
        if tail < 0:
            return _error(400, f"tail must be >= 0, got {tail}")
        if self.logs.full:
            self.logs.refuse()
            return _error(503, f"too many log streams open (max {self.settings.max_clients})")
        return self._respond(self._log_frames(_RANK[level], tail))

    # ----------------------------------------------------------- generators
    async def _event_frames(self, wants: Callable[[Event], bool] | None, pattern: str,
                            after: int | None) -> AsyncIterator[bytes]:
        from starlette.concurrency import iterate_in_threadpool

        # First: from now on every event is queued. Clients of one pattern share chunks.
        client = self.events.join(wants, group="*" if wants is None else pattern)
        if client is None:
            yield dropped_frame("too many event streams open")
            return
        try:
            newest = self._rt.bus.last_seq
            if after is not None and after > newest:
                # An id from before the event log was reset (a new store): the
                # client's seqs mean nothing here; it gets what comes next.
                yield gap_frame(after, newest + 1, "Last-Event-ID is past this server's "
                                "newest event (the event log was reset)")
                after = newest
            if after is not None:
                client.covered = after
                backlog = read_backlog(self._rt.bus, self._rt.event_store, after, wants,
                                       self.settings.backlog_page)
                async for page in iterate_in_threadpool(backlog):
                    client.covered = max(client.covered, page.covered)
                    if page.frames:
                        yield page.frames
                    if client.dropped is not None:
                        break
            async for chunk in _live(client):
                yield chunk
        finally:
            self.events.leave(client)

    async def _log_frames(self, min_rank: int, tail: int) -> AsyncIterator[bytes]:
        seen: set[int] = set()  # lines in both the tail and the live feed

        def wants(line: LogLine) -> bool:
            return _RANK.get(line.level, 1) >= min_rank and id(line) not in seen

        client = self.logs.join(wants)  # first, then the tail: no line falls between
        if client is None:
            yield dropped_frame("too many log streams open")
            return
        recent = list(self._rt.recent_logs)[-tail:] if tail else []
        seen.update(id(line) for line in recent)  # the pump runs only at our next await
        try:
            chosen = [encode_log(line)[1] for line in recent
                      if _RANK.get(line.level, 1) >= min_rank]
            if chosen:
                yield b"".join(chosen)
            async for chunk in _live(client):
                yield chunk
        finally:
            self.logs.leave(client)

    def _respond(self, frames: AsyncIterator[bytes]) -> Response:
        from sse_starlette.event import ServerSentEvent
        from sse_starlette.sse import EventSourceResponse

        return EventSourceResponse(
            frames, ping=self.settings.heartbeat, sep="\n",
            ping_message_factory=lambda: ServerSentEvent(comment="ping", sep="\n"),
            send_timeout=self.settings.send_timeout,
        )


async def _live(client: StreamClient[Any]) -> AsyncIterator[bytes]:
    """The client's live frames until it is dropped (then the dropped frame)."""
    while True:
        await client.wait()
        if client.dropped is not None:
            yield dropped_frame(client.dropped)
            return
        chunk = client.take()
        if chunk:
            yield chunk


def _error(status: int, message: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def stream_routes(rt: Runtime, settings: StreamSettings | None = None) -> list[Route]:
    """The SSE routes of ``rt`` (``StreamRoutes(rt, settings).routes``)."""
    return StreamRoutes(rt, settings).routes
