"""``moonbus serve --http HOST:PORT [--http-token X]``: the HTTP API and console.

Off unless ``--http`` is given. The token comes from ``--http-token``, else
``MOONBUS_HTTP_TOKEN``, else a fresh random one; the console link
``http://HOST:PORT/#token=TOKEN`` is printed once at start (on stderr) only
when the token was generated: a token the operator chose is not echoed into
logs (the link is then printed without it). ``moonbus.http`` and its
third-party stack are imported only here, when ``--http`` is given; a missing
``http`` extra is a usage error naming the pip command.

Threads: the control thread of ``moonbus serve``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from moonbus.errors import ConfigError

if TYPE_CHECKING:
    from moonbus.admin.rcon_server import RconServer
    from moonbus.http.server import HttpServer
    from moonbus.runtime import Runtime

__all__ = ["http_options", "parse_host_port", "start_http"]

TOKEN_ENV = "MOONBUS_HTTP_TOKEN"
F = TypeVar("F", bound=Callable[..., Any])


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (host 127.0.0.1) or ``[v6]:PORT``; ``ConfigError`` if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"--http wants HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"write an IPv6 host in brackets: [{host}]:{port_text}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--http port must be 0..65535, got {port}")
    return host or "127.0.0.1", port


def http_options(func: F) -> F:
    """Add ``--http`` and ``--http-token`` to a click command."""
    func = click.option(
        "--http-token", envvar=TOKEN_ENV, default=None, metavar="TOKEN",
        help=f"Bearer token of the HTTP API (or {TOKEN_ENV}); default: a random one, "
        "printed once with the console link.")(func)
    return click.option(
        "--http", "http_address", default=None, metavar="HOST:PORT",
        help="Serve the HTTP management API and web console there (port 0 picks a free "
        "one). Off by default. With --http, RCON runs only when a password is given.")(func)


def start_http(rt: Runtime, address: str, token: str | None,
               echo: Callable[[str], None], rcon: RconServer | None = None) -> HttpServer:
    """Start the HTTP server for ``rt`` at ``address``; print where (and the
    generated token's link); ``click.UsageError`` for a bad address, token or extra.
    ``rcon``: the RCON server started beside it, whose logins ``/metrics`` shows."""
    try:
        host, port = parse_host_port(address)
        from moonbus.http.server import HttpServer
        from moonbus.http.settings import HttpSettings

        server = HttpServer(rt, HttpSettings(host=host, port=port, token=token or None),
                            rcon=rcon).start()
    except ImportError as exc:
        raise click.UsageError(str(exc)) from exc
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if not token:
        echo(f"moonbus serve: HTTP console on {server.console_url}")
        echo("moonbus serve: (the token was generated for this run and is shown only here)")
    else:
        echo(f"moonbus serve: HTTP console on {server.url}/ (token from --http-token "
             f"or {TOKEN_ENV})")
    return server
