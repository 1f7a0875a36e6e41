"""The bus's small public records: its statistics and the gate it tells.

Kept apart from ``bus.py`` so that module holds only the bus's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BusStatistics", "DispatchGate"]


class DispatchGate(Protocol):
    """Told when a drain (delivery of one or more events) starts and ends, on
    the delivering thread; the runtime uses it to let handlers run before polls
    (see ``moonbus.host.gate``)."""

    def enter(self) -> None: ...

    def exit(self) -> None: ...


@dataclass(frozen=True)
class BusStatistics:
    """Counters of one bus, taken atomically enough for monitoring.

    ``delivered`` counts handler calls (async handlers: scheduled calls).
    ``cascades_cut`` counts top-level emits whose cascade reached a limit
    (``moonbus.bus.cascade``); ``cascade_emits_refused`` the emits refused.
    ``c_emits_taken``/``c_emits_handed_back``: emits the C core (``_fastemit``)
    did itself / gave to the Python path (both 0 on the Python path).
    """

    last_seq: int
    emitted: int
    delivered: int
    handler_errors: int
    subscriptions: int
    log_size: int
    pending: int
    cascades_cut: int = 0
    cascade_emits_refused: int = 0
    c_emits_taken: int = 0
    c_emits_handed_back: int = 0
