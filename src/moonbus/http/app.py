"""``build_app(rt, settings)``: the HTTP management API as one Starlette app.

Composition, outermost first: ``GuardMiddleware`` (security headers,
counters) -> ``AuthMiddleware`` (token, throttle) -> ``InflightCap`` (requests
in flight, counted only once the token was checked) -> the router. The
routes come from ``ROUTE_GROUPS``, each a function ``(rt, settings, parts)
-> routes``, in order, then the OpenAPI document (which describes exactly
the routes composed, ``moonbus.http.openapi``). ``parts`` (``AppParts``)
holds what groups share: the HTTP counters, the token-check counters
(``parts.counters.logins``, a ``LoginCounters``) and ``on_close``, functions
run on the event loop when the server stops (before uvicorn waits for open
connections, so live streams end at once) and at lifespan shutdown.

The live streams and ``/metrics`` are one group (``streams_and_metrics``);
another front end joins the same way, by adding its group to ``ROUTE_GROUPS``.

Unknown paths and wrong methods get the JSON error shape (404, 405), like
every other error. No CORS middleware is installed, on purpose.

Threads: the app runs on the server's event-loop thread; see ``api`` for
which work goes to the worker pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from moonbus.http.api import api_routes
from moonbus.http.auth import AuthMiddleware, make_throttle
from moonbus.http.guard import GuardMiddleware, InflightCap
from moonbus.http.metrics import HasRconStatistics, metrics_routes
from moonbus.http.openapi import openapi_routes
from moonbus.http.responses import error_response
from moonbus.http.settings import HttpCounters, HttpSettings
from moonbus.http.streams import StreamRoutes

if TYPE_CHECKING:
    from moonbus.runner.pool import Runner
    from moonbus.runtime import Runtime

__all__ = ["ROUTE_GROUPS", "AppParts", "RouteGroup", "build_app", "console_routes",
           "streams_and_metrics"]

_log = logging.getLogger("moonbus.http")


@dataclass
class AppParts:
    """What the route groups of one app share (see the module docstring).

    ``on_close`` and ``loop`` belong to the server's event-loop thread once it
    runs; ``close()`` runs the closers once, each even if another failed.
    ``rcon``: the RCON server beside this app (``moonbus serve``), whose logins
    ``/metrics`` reports; ``runner``: a job pool of the same game, whose queue,
    outcomes and latency ``/metrics`` reports; None when there is none."""

    counters: HttpCounters = field(default_factory=HttpCounters)
    on_close: list[Callable[[], None]] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    rcon: HasRconStatistics | None = None
    runner: Runner | None = None

    def close(self) -> None:
        """Run and forget the closers (event-loop thread)."""
        while self.on_close:
            closer = self.on_close.pop(0)
            try:
                closer()
            except Exception:
                _log.exception("HTTP app: closing %r failed", closer)


RouteGroup = Callable[["Runtime", HttpSettings, AppParts], list[BaseRoute]]


def console_routes(rt: Runtime, settings: HttpSettings, parts: AppParts) -> list[BaseRoute]:
    """``GET /`` (the console page) and ``/static/...`` (its files), from the
    package's ``http/static`` folder (no file from outside the package; no token:
    the page holds no data)."""
    static = resources.files("moonbus.http").joinpath("static")

    async def console(request: Request) -> Response:
        page = static.joinpath("console.html")
        if not page.is_file():
            return error_response(404, "the console page is not installed in this package")
        return Response(page.read_bytes(), media_type="text/html; charset=utf-8")

    return [
        Route("/", console, methods=["GET"], name="console"),
        Mount("/static", app=StaticFiles(directory=str(static), check_dir=False),
              name="static"),
    ]


def streams_and_metrics(rt: Runtime, settings: HttpSettings, parts: AppParts) -> list[BaseRoute]:
    """The live streams (``moonbus.http.streams``, ended by ``parts.on_close``) and
    ``GET /metrics`` over the runtime, the token checks, the HTTP counters, the streams
    and the RCON server's logins when one is given (``parts.rcon``)."""
    streams = StreamRoutes(rt, settings.streams)
    parts.on_close.append(streams.close)
    return [*streams.routes, *metrics_routes(rt, logins=parts.counters.logins,
                                             streams=streams, http=parts.counters,
                                             rcon=parts.rcon, runner=parts.runner)]


# The route groups of the app, in order. Extend this tuple to compose more routes.
ROUTE_GROUPS: tuple[RouteGroup, ...] = (api_routes, streams_and_metrics, console_routes)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such path: {request.url.path}",
               405: f"method {request.method} is not allowed here"}.get(exc.status_code,
                                                                        str(exc.detail))
    allow = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow")
    headers = {"allow": allow} if allow else None
    return error_response(exc.status_code, message, headers)


def build_app(rt: Runtime, settings: HttpSettings,
              groups: tuple[RouteGroup, ...] = ROUTE_GROUPS, *,
              rcon: HasRconStatistics | None = None,
              runner: Runner | None = None) -> Starlette:
    """The management API over ``rt`` (``settings.token`` must be set: see
    ``HttpSettings.with_token``). ``app.state.parts`` is its ``AppParts``;
    ``rcon``: an RCON server serving the same runtime (its logins go to ``/metrics``);
    ``runner``: a job pool whose statistics ``/metrics`` reports."""
    if settings.token is None:
        raise ValueError("build_app needs settings with a token (HttpSettings.with_token())")
    parts = AppParts(rcon=rcon, runner=runner)
    counters = parts.counters
    routes: list[BaseRoute] = [r for group in groups for r in group(rt, settings, parts)]
    routes.extend(openapi_routes(routes))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        parts.loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            parts.close()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(GuardMiddleware, counters=counters),
            Middleware(AuthMiddleware, token=settings.token, counters=counters,
                       throttle=make_throttle(settings), ipv6_prefix=settings.auth_ipv6_prefix),
            Middleware(InflightCap, max_inflight=settings.max_inflight, counters=counters),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.parts = parts
    app.state.http_counters = counters
    app.state.http_settings = settings
    return app
