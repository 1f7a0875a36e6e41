"""Helpers for the demo-world tests (a module with a unique name, so that test
modules can import it whatever other ``conftest`` modules are on sys.path)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moonbus.bus.event import to_jsonable


@dataclass(frozen=True)
class Recorded:
    type: str
    data: dict[str, Any]
    tick: int
    source: str


class Recorder:
    """Stands in for ``Bus.emit``: keeps every emitted event in order."""

    def __init__(self) -> None:
        self.events: list[Recorded] = []
        self._lock = threading.Lock()

    def __call__(self, type: str, data: Any, *, tick: int, source: str = "host") -> object:
        event = Recorded(type, dict(data), tick, source)
        with self._lock:
            self.events.append(event)
        return event

    def of(self, type: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.type == type]

    def types(self) -> list[str]:
        return [e.type for e in self.events if e.type != "tick"]

    def jsonable(self) -> list[tuple[str, Any, int, str]]:
        return [(e.type, to_jsonable(e.data), e.tick, e.source) for e in self.events]



Until = Callable[[Callable[[], bool], int], int]
