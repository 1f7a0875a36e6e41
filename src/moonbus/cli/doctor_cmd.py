"""``moonbus doctor``: what works on this install, and why something does not.

Prints one line per finding (see ``moonbus.cli.diagnosis``): Python, lupa and
its Lua, a real script run, the time limits, each C fast path (on, or off with
the reason) and the Redis server (``--redis URL``; default
``$MOONBUS_REDIS_URL`` or redis://127.0.0.1:6379/0). Exit code 0 when the core
works, 1 when something required is broken: the core, or a Redis the user
configured (by ``--redis`` or the environment) that does not answer. Fast
paths and an unconfigured Redis are reported, never fatal.

Threads: the main thread runs every probe; nothing is kept afterwards.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import click

from moonbus.cli.diagnosis import (
    DEFAULT_REDIS_URL,
    REDIS_URL_ENV,
    Finding,
    core_findings,
    fast_path_findings,
    redis_finding,
    version_line,
)

__all__ = ["doctor_command"]


def _line(finding: Finding, width: int) -> str:
    return f"{finding.name:<{width}}  {finding.status:<11}  {finding.detail}"


@click.command("doctor")
@click.option("--redis", "redis_url", default=None, metavar="URL",
              help=f"Redis to check (default: ${REDIS_URL_ENV} or {DEFAULT_REDIS_URL}; "
                   "a configured one that does not answer is an error).")
@click.option("--timeout", default=1.0, show_default=True,
              type=click.FloatRange(min=0.01, max=60.0),
              help="Seconds to wait for Redis.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON array.")
def doctor_command(redis_url: str | None, timeout: float, as_json: bool) -> int:
    """Check this install: Python, lupa, a script run, time limits, fast paths, Redis."""
    configured = redis_url or os.environ.get(REDIS_URL_ENV) or None
    findings = [
        *core_findings(),
        *fast_path_findings(),
        redis_finding(configured or DEFAULT_REDIS_URL, timeout=timeout,
                      required=configured is not None),
    ]
    broken = [f for f in findings if f.broken]
    if as_json:
        click.echo(json.dumps([{**asdict(f), "broken": f.broken} for f in findings], indent=2))
    else:
        click.echo(version_line())
        width = max(len(f.name) for f in findings)
        for finding in findings:
            click.echo(_line(finding, width))
        if broken:
            click.echo(f"moonbus doctor: broken: {', '.join(f.name for f in broken)}")
        else:
            click.echo("moonbus doctor: ok (the core works; fast paths and an unconfigured "
                       "Redis are optional)")
    return 1 if broken else 0
