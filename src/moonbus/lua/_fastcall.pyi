"""Type stub of the C event-delivery fast path (see ``_fastcall.c``)."""

import threading
from collections.abc import Callable
from typing import Any

LUA_MODULE: str
LUA_REGISTRYINDEX: int  # probed from lupa's Lua at import (see _luaapi.h)

class CallState:
    """One LuaEngine's call state (see _callstate.h and moonbus.lua.call_state)."""

    @property
    def lock(self) -> threading.RLock: ...
    @property
    def hook_lock(self) -> threading.Lock: ...
    @property
    def chain(self) -> list[int]: ...
    abort_reason: str | None
    last_reason: str | None
    pending_reason: str | None
    token: int
    pending_token: int
    depth: int
    in_call: bool
    closed: bool
    def __init__(self, *, lock: threading.RLock, hook_lock: threading.Lock) -> None: ...

class DeliveryCounts:
    @property
    def taken(self) -> int: ...
    @property
    def handed_back(self) -> int: ...

class Delivery:
    def __init__(
        self,
        *,
        engine: Any,
        call_state: CallState,
        watchdog: Any,
        lua_module: Any,
        end_call: Callable[[], None],
        abort_on_entry: Callable[[int], None],
        runtime: Any,
        state: int,
        lupa_lock: Any,
        global_key: str,
        fallback: Callable[[int, Any], None],
        failed: Callable[[int, Any, Any, str | None, float | None], None],
        settings: Any,
        budget: HandlerBudget | None,
        counts: DeliveryCounts | None,
    ) -> None: ...
    def __call__(self, sub_id: int, event: Any, /) -> None: ...

class HandlerBudget:
    seq: int
    spent_ns: int
    blocked: bool
    skipped: int
    calls: int
    def __init__(self) -> None: ...

class WatchSlot:
    gen: int
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> Any: ...
    def snapshot(self) -> tuple[float, float, int, int, int] | None: ...
    def claim(self, gen: int, /) -> bool: ...

class EventQueue:
    sleeping: bool
    max_lag: float  # seconds; 0: pace() never waits
    owner: int  # the event thread's ident: pace() never waits on it
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
    def pace(self) -> None: ...
    def pace_counts(self) -> tuple[int, float, int, int, int, float, float]: ...
    def host_enter(self) -> None: ...
    def host_leave(self) -> None: ...
