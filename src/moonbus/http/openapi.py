"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

Built from the routes the app actually composed (``build_app``), each
described from ``OPERATIONS``: the document lists exactly what the server
answers. A route without an entry there is still listed, marked
``x-undocumented`` (tests/http fails on it), so adding a route without
describing it cannot go unnoticed, and never breaks the server.

The document needs the token like every API answer (it names no secret, but
an anonymous caller learns nothing from this server but ``/healthz``).

Threads: built once when the app is built; served read-only.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from moonbus.http.responses import json_response

__all__ = ["OPERATIONS", "openapi_document", "openapi_routes"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "script name (URL-encoded, e.g. mining%232 for mining#2)"}


def _int_q(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 0}, "description": what}


def _ok(description: str, schema: dict[str, Any] | None = None,
        media: str = "application/json") -> dict[str, Any]:
    ok: dict[str, Any] = {"description": description}
    if schema is not None:
        ok["content"] = {media: {"schema": schema}}
    return ok


def _errors(*codes: int) -> dict[str, Any]:
    what = {400: "bad input or malformed body", 401: "no or wrong token",
            404: "unknown script", 409: "wrong state (already running / not running)",
            413: "body too large", 429: "too many wrong tokens from this address",
            503: "no event store / server busy"}
    return {str(c): {"description": what[c], "content": {"application/json": {"schema": _ERROR}}}
            for c in (401, 429, *codes)}


_SCRIPT = {"type": "object", "required": ["name", "status", "uptime", "polls",
                                          "handler_errors", "stats", "errors"],
           "properties": {"name": {"type": "string"}, "status": {"type": "string"},
                          "uptime": {"type": "number"}, "polls": {"type": "integer"},
                          "handler_errors": {"type": "integer"}, "stats": {"type": "object"},
                          "handler_calls": {"type": "integer"},
                          "errors": {"type": "array", "items": {"type": "string"}}}}
_CONTROL = {"type": "object", "required": ["name", "status", "message"],
            "properties": {"name": {"type": "string"}, "status": {"type": "string"},
                           "message": {"type": "string"}}}
_EVENT = {"type": "object", "required": ["seq", "tick", "type", "data", "ts", "source"],
          "properties": {"seq": {"type": "integer"}, "tick": {"type": ["integer", "null"]},
                         "type": {"type": "string"}, "data": {}, "ts": {"type": "number"},
                         "source": {"type": ["string", "null"]}}}


def _control(verb: str) -> dict[str, Any]:
    return {"summary": f"{verb} a script (admin command script.{verb})",
            "parameters": [_NAME],
            "responses": {"200": _ok(f"{verb} done", _CONTROL), **_errors(404, 409, 400)}}


# (method, path) -> the operation object. Keep in step with the routes.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/healthz"): {"summary": "liveness; no token needed, says nothing secret",
                          "security": [], "responses": {"200": _ok("up", {"type": "object"})}},
    ("get", "/"): {"summary": "the web console page (no token needed; holds no data)",
                   "security": [], "responses": {"200": _ok("HTML page", None)}},
    ("get", "/static/{path}"): {
        "summary": "the console page's files (no token needed)", "security": [],
        "parameters": [{"name": "path", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _ok("a file", None), "404": {"description": "no such file"}}},
    ("get", "/openapi.json"): {"summary": "this document",
                               "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"}),
                                             **_errors()}},
    ("get", "/api/scripts"): {
        "summary": "scripts in load order with status, stats and last errors (admin: scripts)",
        "responses": {"200": _ok("scripts", {"type": "object", "properties": {
            "scripts": {"type": "array", "items": _SCRIPT}}}), **_errors()}},
    ("post", "/api/scripts/{name}/start"): _control("start"),
    ("post", "/api/scripts/{name}/stop"): _control("stop"),
    ("post", "/api/scripts/{name}/reload"): _control("reload"),
    ("get", "/api/scripts/{name}/shared"): {
        "summary": "a script's shared values (admin: shared.dump)", "parameters": [_NAME],
        "responses": {"200": _ok("shared values", {"type": "object", "properties": {
            "name": {"type": "string"}, "shared": {"type": "object"}}}), **_errors(404)}},
    ("get", "/api/events"): {
        "summary": "query events (admin: events.get); NDJSON with ?format=ndjson or "
                   "Accept: application/x-ndjson",
        "parameters": [
            {"name": "type", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "event type or bus pattern (*, prefix*); default *"},
            _int_q("after_seq", "events with a greater seq (page forward)"),
            _int_q("after_tick", "events with a greater tick"),
            _int_q("limit", "JSON: default 100, max 1000 (newest when after_seq is absent); "
                   "NDJSON: default and max 100,000"),
            {"name": "format", "in": "query", "required": False,
             "schema": {"enum": ["json", "ndjson"]}}],
        "responses": {"200": {"description": "events in seq order", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "events": {"type": "array", "items": _EVENT},
                "last_seq": {"type": ["integer", "null"]}}}},
            "application/x-ndjson": {"schema": _EVENT}}}, **_errors(400)}},
    ("delete", "/api/events"): {
        "summary": "delete stored events, all or one ?type= (admin: events.clear)",
        "parameters": [{"name": "type", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {"200": _ok("how many", {"type": "object"}), **_errors(400, 503)}},
    ("get", "/api/settings"): {
        "summary": "current settings (admin: settings)",
        "responses": {"200": _ok("settings", {"type": "object", "properties": {
            "settings": {"type": "object"}}}), **_errors()}},
    ("put", "/api/settings/{key}"): {
        "summary": "change a setting at once (admin: settings.set)",
        "parameters": [{"name": "key", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["value"], "additionalProperties": False,
            "properties": {"value": {"type": ["number", "boolean", "string", "null"]}}}}}},
        "responses": {"200": _ok("the new value", {"type": "object", "properties": {
            "key": {"type": "string"}, "value": {}}}), **_errors(400, 413)}},
    ("get", "/api/stream/events"): {
        "summary": "committed events as Server-Sent Events (id: seq); ?type= pattern; "
                   "Last-Event-ID or ?after_seq= resumes from the event log",
        "parameters": [{"name": "type", "in": "query", "required": False,
                        "schema": {"type": "string"}},
                       _int_q("after_seq", "resume after this seq")],
        "responses": {"200": _ok("event stream", {"type": "string"}, "text/event-stream"),
                      **_errors(400, 503)}},
    ("get", "/api/stream/logs"): {
        "summary": "script log lines as Server-Sent Events; ?level= and above, after "
                   "the last ?tail= lines kept",
        "parameters": [{"name": "level", "in": "query", "required": False,
                        "schema": {"enum": ["debug", "info", "warn", "error"]}},
                       _int_q("tail", "first send this many of the recent lines")],
        "responses": {"200": _ok("log stream", {"type": "string"}, "text/event-stream"),
                      **_errors(400, 503)}},
    ("get", "/metrics"): {
        "summary": "Prometheus text format: bus, script, runner, store and HTTP counters",
        "responses": {"200": _ok("metrics", {"type": "string"}, "text/plain"), **_errors()}},
}


def _paths(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every operation the routes serve (HEAD left out)."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Route):
            found.extend((m.lower(), route.path) for m in sorted(route.methods or ())
                         if m != "HEAD")
        elif isinstance(route, Mount):
            found.append(("get", route.path + "/{path}"))
    return found


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` plus ``/openapi.json`` itself."""
    try:
        version = metadata.version("moonbus")
    except metadata.PackageNotFoundError:  # run from a source tree
        version = "unknown"
    paths: dict[str, dict[str, Any]] = {}
    for method, path in [*_paths(routes), ("get", "/openapi.json")]:
        operation = OPERATIONS.get((method, path))
        if operation is None:
            operation = {"summary": "(not described)", "x-undocumented": True,
                         "responses": {"200": {"description": "see the server's docs"}}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "moonbus HTTP management API", "version": version,
                 "description": "One admin registry, three front ends (CLI, RCON, HTTP). "
                                "Errors are {\"error\": message}. See docs/http.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
        },
        "security": [{"bearer": []}],
    }


def openapi_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """``GET /openapi.json`` describing ``routes`` (and itself)."""
    document = openapi_document(routes)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    return [Route("/openapi.json", openapi, methods=["GET"], name="openapi")]
