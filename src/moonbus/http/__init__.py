"""The HTTP management API and web console (SPEC §11; docs/http.md).

Optional: it needs the ``http`` extra (``pip install 'moonbus[http]'``:
Starlette, uvicorn, sse-starlette, prometheus-client). ``import moonbus``
never imports this package; ``Runtime.serve_http`` and ``moonbus serve
--http`` import it when asked, and a missing extra is a clear ``ImportError``.

``serve(rt, ...)`` starts an ``HttpServer`` for a runtime; ``build_app`` gives
the Starlette app alone (to mount it in another ASGI server).
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the moonbus HTTP API needs the 'http' extra: pip install 'moonbus[http]' ({exc})"
    ) from exc

from typing import TYPE_CHECKING, Any

from moonbus.http.app import ROUTE_GROUPS, build_app
from moonbus.http.server import HttpServer
from moonbus.http.settings import HttpSettings, HttpStatistics

if TYPE_CHECKING:
    from moonbus.runtime import Runtime

__all__ = ["ROUTE_GROUPS", "HttpServer", "HttpSettings", "HttpStatistics", "build_app", "serve"]


def serve(rt: Runtime, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
          **limits: Any) -> HttpServer:
    """Start the HTTP API for ``rt`` on a background thread and return the server.
    ``limits`` are further ``HttpSettings`` fields (``max_body_bytes=...``)."""
    settings = HttpSettings(host=host, port=port, token=token, **limits)
    return HttpServer(rt, settings).start()
