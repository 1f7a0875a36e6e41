"""Helpers for the host-side memory-cap tests: a stepped runtime with a
well-behaved companion script beside the offender, and the process's RSS."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.runtime import LogLine, Runtime

MIB = 1024 * 1024
RSS_BOUND = 300 * MIB  # SPEC §4b: a few hundred MiB over the Lua limit, at most

# Counts every "ping" in its event engine, and polls: it must keep its service
# whatever the offender does.
COMPANION = """
events:on("ping", function(e) shared:int("pings"):increment() end)
function poll() shared:int("polls"):increment() return 50 end
"""


def rss() -> int:
    """Resident set size of this process, in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Clock:
    """A virtual clock the test advances by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Arena:
    """A stepped runtime holding an offender and a companion script."""

    def __init__(self, tmp_path: Path, *, delivery: str = "immediate",
                 settings: HostSettings | None = None) -> None:
        self.clock = Clock()
        self.rt = Runtime(threaded=False, clock=self.clock, event_delivery=delivery,
                          settings=settings)
        self.logs: list[LogLine] = []
        self.rt.add_log_sink(self.logs.append)
        self._dir = tmp_path
        self.companion = self.load(COMPANION, "companion")
        self.companion.start()

    def load(self, text: str, name: str) -> ScriptHost:
        path = self._dir / f"{name}.lua"
        path.write_text(text, encoding="utf-8")
        return self.rt.load(path)

    def step(self, seconds: float = 0.1) -> None:
        self.clock.now = round(self.clock.now + seconds, 6)
        self.rt.run_due(self.clock.now)

    def ping(self, n: int = 1) -> None:
        for _ in range(n):
            self.rt.bus.emit("ping")
        self.rt.flush_events(5.0)
        self.rt.run_due(self.clock.now)

    def companion_pings(self) -> int:
        value: Any = self.companion.shared.int("pings").get()
        return int(value)

    def close(self) -> None:
        self.rt.close()
