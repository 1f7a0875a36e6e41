"""The bus's emit state, and the C fast path over it when that is built.

Why a separate object: ``Bus.emit`` is the hottest call of the runtime, and
most of its cost in Python is the interpreter itself. ``_fastemit.c`` does the
common case (a known type name, a dict of scalars, no nested or queued
events, a cached plain route) in C; to let the C and Python paths interleave
on one bus, the mutable emit state lives in this object, not on the ``Bus``:
``seq``, ``delivered``, ``closed``, ``draining``, ``in_flight`` and ``linked``
(a handler touched cascade state, so the drain must end in bus.py), and
``pace``: None, or a callable both paths run after each top-level emit, once
the emit lock is released (``Bus.set_pace``; deferred delivery's
backpressure, ``moonbus.host.deferred``). bus.py
reads and writes them as ``self._core.<name>`` under ``_emit_lock``, as before.

``make_emit_state`` returns the C ``EmitCore`` when the extension was built
(``pip install`` compiles it; a machine without a C compiler gets the pure
Python path, which is the reference and behaves identically) and ``native``
is True; otherwise a plain ``PyEmitState`` that holds the same fields. The
environment variable ``MOONBUS_PURE_PYTHON=1`` turns the C path off for a
whole process (the test suite runs the bus tests both ways).
"""

from __future__ import annotations

from typing import Any, Protocol

from moonbus.native import load_fast_path

__all__ = ["FAST_EMIT", "EmitState", "PyEmitState", "make_emit_state", "native_available"]

FAST_EMIT = "moonbus.bus._fastemit"


class EmitState(Protocol):
    """The mutable emit state of one bus (read and written under its emit lock)."""

    seq: int
    delivered: int
    closed: bool
    draining: bool
    in_flight: Any
    linked: bool
    taken: int  # read-only on the C core
    handed_back: int
    pace: Any  # None, or called after each top-level emit (lock released)


class PyEmitState:
    """The emit state as plain attributes (the pure-Python path)."""

    __slots__ = ("closed", "delivered", "draining", "handed_back", "in_flight", "linked", "pace",
                 "seq", "taken")

    def __init__(self, seq: int) -> None:
        self.seq = seq  # the last committed seq
        self.delivered = 0  # handler calls so far
        self.closed = False  # the bus refuses emits
        self.draining = False  # a thread is delivering (nested emits only queue)
        self.in_flight: Any = None  # the plain route being delivered
        self.linked = False  # cascade state to reset: the drain ends in bus.py
        self.taken = 0  # emits done in C: none here (the C core counts its own)
        self.handed_back = 0  # emits the C core gave to bus.py's general path
        self.pace: Any = None  # run after each top-level emit, the lock released


def native_available() -> bool:
    """Whether the C fast path is built and not switched off for this process."""
    return load_fast_path(FAST_EMIT).on


def make_emit_state(*, native: bool, seq: int, **wiring: Any) -> EmitState:
    """The C core wired to the bus's objects (see ``_fastemit.c``), or plain state."""
    fast = load_fast_path(FAST_EMIT, native=native)
    if fast.module is not None:
        core: EmitState = fast.module.EmitCore(seq=seq, **wiring)
        return core
    return PyEmitState(seq)
