"""One ``LuaEngine``'s call state, shared by type with the C delivery.

Why an object of its own: the C delivery (``_fastcall.c``) follows
``LuaEngine._guarded`` and ``_end_call`` step by step, so it reads and writes
the same abort-token state as the Python path. That state lives here, not
in the engine's ``__dict__``: when the C extension is used it is the C type
``moonbus.lua._fastcall.CallState`` (``_callstate.h``), whose fields C reads
as a struct and engine.py through the type's members; otherwise it is
``PyCallState``, the pure-Python twin with the same names in ``__slots__``.
A field renamed on one side only cannot go unnoticed: the engine's
``self.call_state.<name>`` fails on a slotted object, and
``tests/lua/test_call_state.py`` compares the C members with the slots and
checks that engine.py uses no other name.

Threads and locks (the protocol is engine.py's, see its docstring): the
engine's owner thread writes ``token``, ``in_call``, ``depth`` and
``closed`` holding ``lock``; ``abort`` (any thread) reads ``token`` and
``in_call`` and writes ``pending_token``, ``pending_reason`` and
``abort_reason`` holding ``hook_lock``; ``chain`` and ``last_reason`` change
under ``hook_lock``. ``lock``, ``hook_lock`` and the ``chain`` list are fixed
when the state is made.

The locks (issue 16): the C ``CallState`` owns two C locks whose state is part
of the struct (``_callstate.h``'s ``MbLock``), which the C delivery takes and
releases without a Python call; Python sees them as ``EngineLock`` objects
(``acquire``/``release``/``with``, the GIL released while waiting, exactly as
threading's locks), ``lock`` reentrant like the ``threading.RLock`` it
replaces, ``hook_lock`` not, like ``threading.Lock``. ``PyCallState`` (the
reference) keeps those threading locks.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Protocol

from moonbus.lua.fastcall import FAST_CALL
from moonbus.native import load_fast_path

__all__ = ["CALL_STATE_FIELDS", "CallState", "EngineLock", "PyCallState", "make_call_state"]


class EngineLock(Protocol):
    """What the engine does with its locks (threading's or the C ``EngineLock``)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None, /) -> None: ...


class CallState(Protocol):
    """What ``LuaEngine`` and the C delivery share (see the module docstring)."""

    @property
    def lock(self) -> EngineLock: ...
    @property
    def hook_lock(self) -> EngineLock: ...
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


class PyCallState:
    """The call state as plain slots (the pure-Python path; the reference)."""

    __slots__ = ("abort_reason", "chain", "closed", "depth", "hook_lock", "in_call",
                 "last_reason", "lock", "pending_reason", "pending_token", "token")

    def __init__(self, *, lock: EngineLock, hook_lock: EngineLock) -> None:
        self.lock = lock  # the engine's RLock: one thread uses the engine at a time
        self.hook_lock = hook_lock  # serialises abort() with the end of a call
        self.chain: list[int] = []  # Lua threads being resumed (pointers)
        self.abort_reason: str | None = None  # why the running call is aborting
        self.last_reason: str | None = None  # abort reason of the call that just ended
        self.pending_reason: str | None = None  # recorded with pending_token
        self.token = 0  # the current (or last) top-level call's token
        self.pending_token = 0  # latest token abort() saw before its call was live
        self.depth = 0  # 0 idle, 1 in a call, more: nested calls
        self.in_call = False  # a top-level call is live (abort() may arm it)
        self.closed = False  # the engine is closed


# The names both types have (the C type's members must be exactly these).
CALL_STATE_FIELDS = frozenset(PyCallState.__slots__)


def make_call_state(*, native: bool) -> CallState:
    """The C ``CallState`` (with its own C locks) when the C delivery can be used
    (``native`` and the extension loads), else ``PyCallState`` with a fresh
    ``threading.RLock`` and ``threading.Lock``."""
    fast = load_fast_path(FAST_CALL, native=native)
    if fast.module is not None:
        made: CallState = fast.module.CallState()
        return made
    return PyCallState(lock=threading.RLock(), hook_lock=threading.Lock())
