"""Type stub of the memory backend's C int operations (see ``_fastint.c``)."""

from collections.abc import Callable
from typing import Any

class IntOp:
    def __init__(
        self,
        *,
        values: dict[str, Any],
        name: str,
        state: Any,
        fallback: Callable[..., int],
        sign: int,
        default_one: bool,
    ) -> None: ...
    def __call__(self, *args: Any) -> int: ...
    def quick(self, *args: Any) -> Any: ...

class KindCheck:
    def __init__(
        self,
        *,
        values: dict[str, Any],
        name: str,
        state: Any,
        kind: type,
        fallback: Callable[[], object],
    ) -> None: ...
    def __call__(self) -> None: ...
    def quick(self) -> Any: ...
