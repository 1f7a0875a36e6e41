"""Type stub of the C conversion into Lua (see ``_fastconvert.c``)."""

from typing import Any

LUA_MODULE: str
MAX_FAST_DEPTH: int
MAX_OPS: int

class Converter:
    def __init__(
        self, *, state: int, lupa_lock: Any, global_key: str, classes: dict[type, Any],
        max_depth: int,
    ) -> None: ...
    def bind(self, builder: Any, /) -> None: ...
    def __call__(self, value: Any, /) -> Any: ...
    def to_box(self, value: Any, /) -> bool: ...

def install_quick_bind(*, state: int, lupa_lock: Any, global_key: str) -> None: ...
