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
    ) -> None: ...
    def __call__(self, sub_id: int, event: Any, /) -> None: ...
