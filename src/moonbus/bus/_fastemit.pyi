"""Type stub of the C fast path of ``Bus.emit`` (see ``_fastemit.c``)."""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

class EmitCore:
    seq: int
    delivered: int
    closed: bool
    draining: bool
    linked: bool
    in_flight: Any
    pace: Callable[[], None] | None
    def __init__(
        self,
        *,
        event_type: type[tuple[Any, ...]],
        type_names: set[str],
        lock: Any,
        clock: Callable[[], float] | None,
        store: Any,
        log: Any,
        pending: Any,
        gate: Any,
        waiters: Any,
        routes: dict[str, Any],
        default_source: str,
        empty_data: Any,
        handler_failed: Callable[..., None],
        drain_pending: Callable[[Any], None],
        general: Callable[..., Any],
        seq: int,
    ) -> None: ...
    def emit(self, type: str, data: Any, source: str | None, tick: int | None, /) -> Any: ...
    def __call__(
        self,
        type: str,
        data: Any = None,
        *,
        source: str | None = None,
        tick: int | None = None,
        cause: Any = None,
    ) -> Any: ...

class GateCounter:
    active: int
    waiting: int
    def enter(self) -> None: ...
    def exit(self) -> None: ...

class FrozenData(Mapping[str, Any]):
    """Read-only event data: str keys, scalar values (see ``_fastemit.c``)."""

    def __init__(self, mapping: Mapping[str, Any] = ..., /) -> None: ...
    def __getitem__(self, key: str, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def copy(self) -> dict[str, Any]: ...
    def __or__(self, other: Mapping[str, Any], /) -> dict[str, Any]: ...
    def __ror__(self, other: Mapping[str, Any], /) -> dict[str, Any]: ...
