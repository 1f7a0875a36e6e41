"""The JSON endpoints of the HTTP API, each one admin command (SPEC §11, §7).

One registry, three front ends: every endpoint here turns its request into
the words of an admin command and runs it through ``rt.admin.call`` (the
registry RCON and ``moonbus admin`` use), then sends the command's
``Answer.data``. Nothing an endpoint answers is computed here:

==============================================  =============================
``GET /api/scripts``                            ``scripts``
``POST /api/scripts/{name}/start|stop|reload``  ``script.start|stop|reload``
``GET /api/scripts/{name}/shared``              ``shared.dump``
``GET /api/events?type=&after_seq=&...``        ``events.get`` (pages for NDJSON)
``DELETE /api/events?type=``                    ``events.clear``
``GET /api/settings``                           ``settings``
``PUT /api/settings/{key}``                     ``settings.set``
==============================================  =============================

Words are handed to the registry as a list, never as a line to split, so a
name such as ``"x; events.clear"`` is only ever a name (404). ``script.eval``
is not reachable over HTTP.

``start`` of a running script and ``stop`` of one that is not running
(loaded, stopped, failed) change nothing: 409 with the command's message.

Threads: the handlers are coroutines on the server's event-loop thread;
admin commands (which may block: a stop waits for ``on_stop``) run on
Starlette's worker thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from moonbus.admin.registry import Answer
from moonbus.errors import AdminError
from moonbus.http.body import BodyError, read_json_object
from moonbus.http.responses import admin_status, error_response, json_bytes, json_response
from moonbus.http.settings import HttpCounters, HttpSettings

if TYPE_CHECKING:
    from moonbus.http.app import AppParts
    from moonbus.runtime import Runtime

__all__ = ["api_routes", "setting_text"]

_log = logging.getLogger("moonbus.http")
_EVENT_PARAMS = frozenset({"type", "after_seq", "after_tick", "limit", "format"})
NDJSON = "application/x-ndjson"


class _Refused(Exception):
    """A request parameter the API refuses before any command runs (400)."""


def setting_text(value: object) -> str:
    """A JSON setting value as the word ``settings.set`` parses: numbers as
    written, true/false, null as ``none``, text as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, int | float | str):
        return str(value)
    raise _Refused(f'"value" must be a number, true/false, null or text, got '
                   f"{type(value).__name__}")


def _int_param(request: Request, name: str, *, low: int = 0, high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _Refused(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        top = "" if high is None else f" and at most {high}"
        raise _Refused(f"{name} must be at least {low}{top}, got {value}")
    return value


class _Api:
    """The endpoints over one runtime's registry."""

    def __init__(self, rt: Runtime, settings: HttpSettings, counters: HttpCounters) -> None:
        self.rt = rt
        self.settings = settings
        self.counters = counters

    def _call(self, words: Sequence[str]) -> Answer:
        return self.rt.admin.call(list(words))

    async def _answer(self, words: Sequence[str], shape: Callable[[Answer], Any] | None = None,
                      ) -> Response:
        """Run a command on the worker pool and send its data (or its error)."""
        try:
            answer = await run_in_threadpool(self._call, words)
        except AdminError as exc:
            status = admin_status(exc)
            if status == 503:
                self.counters.add("unavailable")
            return error_response(status, str(exc))
        except Exception:
            _log.exception("HTTP API: admin command %r failed", words[0])
            return error_response(500, "internal error (logged by the server)")
        if answer.unchanged:
            data = answer.data if isinstance(answer.data, dict) else {}
            return json_response({**data, "error": answer.text}, status=409)
        return json_response(answer.data if shape is None else shape(answer))

    # ------------------------------------------------------------------ routes
    async def scripts(self, request: Request) -> Response:
        return await self._answer(["scripts"])

    def control(self, command: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._answer([command, request.path_params["name"]])

        return endpoint

    async def shared(self, request: Request) -> Response:
        return await self._answer(["shared.dump", request.path_params["name"]])

    async def settings_get(self, request: Request) -> Response:
        return await self._answer(["settings"])

    async def settings_put(self, request: Request) -> Response:
        try:
            body = await read_json_object(request, self.settings.max_body_bytes)
            if set(body) != {"value"}:
                raise _Refused('the body must be {"value": <new value>} and nothing else')
            text = setting_text(body["value"])
        except BodyError as exc:
            return error_response(exc.status, exc.message)
        except _Refused as exc:
            return error_response(400, str(exc))
        return await self._answer(["settings.set", request.path_params["key"], text])

    async def events_clear(self, request: Request) -> Response:
        unknown = set(request.query_params) - {"type"}
        if unknown:
            return error_response(400, f"unknown parameter(s): {', '.join(sorted(unknown))}")
        event_type = request.query_params.get("type")
        return await self._answer(["events.clear", *([event_type] if event_type else [])])

    async def events(self, request: Request) -> Response:
        try:
            unknown = set(request.query_params) - _EVENT_PARAMS
            if unknown:
                raise _Refused(f"unknown parameter(s): {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(sorted(_EVENT_PARAMS))})")
            fmt = request.query_params.get("format")
            if fmt not in (None, "json", "ndjson"):
                raise _Refused(f"format must be json or ndjson, got {fmt!r}")
            ndjson = fmt == "ndjson" or (fmt is None and NDJSON in request.headers.get(
                "accept", ""))
            top = self.settings.max_export_events if ndjson else self.settings.max_events_limit
            limit = _int_param(request, "limit", high=top)
            after_seq = _int_param(request, "after_seq")
            after_tick = _int_param(request, "after_tick")
        except _Refused as exc:
            return error_response(400, str(exc))
        pattern = request.query_params.get("type") or "*"
        bounds = [f"after_tick={after_tick}"] if after_tick is not None else []
        if not ndjson:
            if after_seq is not None:
                bounds.append(f"after_seq={after_seq}")
            bounds.append(f"limit={self.settings.events_limit if limit is None else limit}")
            return await self._answer(["events.get", pattern, *bounds])
        # Check the query once (a bad pattern is a 400, not a broken stream).
        first = ["events.get", pattern, *bounds, f"after_seq={after_seq or 0}", "limit=1"]
        refused = await self._answer(first)
        if refused.status_code != 200:
            return refused
        return StreamingResponse(self._export(pattern, bounds, after_seq or 0, limit),
                                 media_type=NDJSON)

    def _export(self, pattern: str, bounds: list[str], after_seq: int,
                limit: int | None) -> Iterator[bytes]:
        """NDJSON lines, one ``events.get`` page at a time (Starlette runs this
        generator on its worker pool)."""
        cap = self.settings.max_export_events
        wanted = cap if limit is None else limit
        sent = 0
        page = self.settings.max_events_limit
        while sent < wanted:
            try:
                answer = self._call(["events.get", pattern, *bounds, f"after_seq={after_seq}",
                                     f"limit={min(page, wanted - sent)}"])
            except Exception:  # the answer has begun: end it short, and say why in the log
                _log.exception("HTTP API: NDJSON export stopped after %d events", sent)
                self.counters.add("internal_errors")
                return
            events = answer.data["events"]
            if not events:
                return
            yield b"".join(json_bytes(e) + b"\n" for e in events)
            sent += len(events)
            after_seq = answer.data["last_seq"]
        if limit is None:
            more = self._call(["events.get", pattern, *bounds, f"after_seq={after_seq}",
                               "limit=1"])
            if more.data["events"]:
                self.counters.add("export_cut")


async def healthz(request: Request) -> Response:
    """Liveness, without a token: says nothing but that the server answers."""
    return json_response({"status": "ok"})


def api_routes(rt: Runtime, settings: HttpSettings, parts: AppParts) -> list[BaseRoute]:
    """The JSON routes over ``rt``'s admin registry."""
    api = _Api(rt, settings, parts.counters)
    return [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/api/scripts", api.scripts, methods=["GET"], name="scripts"),
        Route("/api/scripts/{name}/start", api.control("script.start"), methods=["POST"],
              name="script_start"),
        Route("/api/scripts/{name}/stop", api.control("script.stop"), methods=["POST"],
              name="script_stop"),
        Route("/api/scripts/{name}/reload", api.control("script.reload"), methods=["POST"],
              name="script_reload"),
        Route("/api/scripts/{name}/shared", api.shared, methods=["GET"], name="script_shared"),
        Route("/api/events", api.events, methods=["GET"], name="events"),
        Route("/api/events", api.events_clear, methods=["DELETE"], name="events_clear"),
        Route("/api/settings", api.settings_get, methods=["GET"], name="settings"),
        Route("/api/settings/{key}", api.settings_put, methods=["PUT"], name="settings_set"),
    ]
