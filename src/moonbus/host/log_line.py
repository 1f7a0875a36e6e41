"""One script log line: what the live panel shows and ``--log-json`` writes.

Made by the runtime's log sink (``Runtime._log``) on the thread that logged;
immutable, so sinks on any thread may keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LogLine"]


@dataclass(frozen=True)
class LogLine:
    """One script log line, as shown in the live panel and written by --log-json."""

    tick: int | None
    script: str
    engine: str
    level: str
    msg: str

    def to_dict(self) -> dict[str, Any]:
        return {"tick": self.tick, "script": self.script, "engine": self.engine,
                "level": self.level, "msg": self.msg}
