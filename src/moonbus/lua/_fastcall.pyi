"""Type stub of the C event-delivery fast path (see ``_fastcall.c``)."""

from collections.abc import Callable
from typing import Any

LUA_MODULE: str

class Delivery:
    def __init__(
        self,
        *,
        engine: Any,
        runtime: Any,
        state: int,
        lupa_lock: Any,
        global_key: str,
        fallback: Callable[[int, Any], None],
        failed: Callable[[int, Any, Any, str | None, float | None], None],
        settings: Any,
        budget: HandlerBudget | None = None,
    ) -> None: ...
    def __call__(self, sub_id: int, event: Any, /) -> None: ...

class HandlerBudget:
    seq: int
    spent_ns: int
    blocked: bool
    skipped: int
    def __init__(self) -> None: ...

class WatchSlot:
    gen: int
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> Any: ...
    def snapshot(self) -> tuple[float, float, int, int, int] | None: ...
    def claim(self, gen: int, /) -> bool: ...

class EventQueue:
    sleeping: bool
    @property
    def stretched(self) -> int: ...
    @property
    def paused(self) -> int: ...
    def __init__(
        self, *, notify: Callable[[], None], report: Callable[[Any, BaseException], None]
    ) -> None: ...
    def __len__(self) -> int: ...
    def push(self, target: Any, sub_id: int, event: Any, /) -> None: ...
    def handler(self, target: Any, sub_id: int, /) -> Callable[[Any], None]: ...
    def drain(self, limit: int, /) -> int: ...
    def head_seq(self) -> int | None: ...
