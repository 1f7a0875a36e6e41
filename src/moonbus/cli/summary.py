"""The ``--summary`` document of ``moonbus run`` (SPEC §8) and how it is written.

The summary holds no wall-clock values, so a virtual-time run (``--tick-ms
0``) with the same scripts, seed and ticks writes the same bytes: scripts in
load order, event types sorted by name, keys in a fixed order.

Pure functions plus one file write; any thread may call them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moonbus.errors import ConfigError
from moonbus.session.session import ScriptReport

__all__ = ["build_summary", "check_writable", "dumps", "write_atomic"]


def build_summary(
    *,
    ticks: int,
    seed: int,
    reports: Sequence[ScriptReport],
    events: Mapping[str, int],
    world: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary object: ticks, seed, one entry per script, event counts, and
    ``world`` when the app gives one (``AppWorld.summary``; the demo world does
    not, so its summary keeps SPEC §8's four keys)."""
    document: dict[str, Any] = {
        "ticks": ticks,
        "seed": seed,
        "scripts": {
            r.name: {
                "status": r.status,
                "shared": dict(r.shared),
                "stats": dict(r.stats),
                "polls": r.polls,
                "handler_errors": r.handler_errors,
                "errors": list(r.errors),
            }
            for r in reports
        },
        "events": {
            "total": sum(events.values()),
            "by_type": {k: events[k] for k in sorted(events)},
        },
    }
    if world is not None:
        document["world"] = dict(world)
    return document


def dumps(document: Any) -> str:
    """Stable JSON text (two-space indent, UTF-8 kept, newline at the end)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def check_writable(path: Path, what: str) -> None:
    """``ConfigError`` when ``path`` cannot be written later (checked before a run starts)."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{what} {path}: directory {parent} is not writable")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: never half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:  # "x": the usual permissions (umask)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
