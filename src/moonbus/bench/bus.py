"""Benchmark: ``Bus.emit`` against blinker and pyee, side by side in one run.

Each row times one synchronous emit of a small payload to N trivial Python
handlers. The moonbus bus does strictly more per emit than its peers: it
assigns ``seq``, freezes the payload into an immutable ``Event``, appends it to
the bounded log (default size, 10,000) and isolates handler errors; blinker's
``Signal.send`` and pyee's ``EventEmitter.emit`` only call the handlers.

Every handler reads one payload field and ticks a counter, so each library
hands the same data to the same number of Python calls. The three emitters run
in interleaved rounds and the best round of each is kept, so a noisy moment
hurts all of them alike. Runs on the calling thread only.

The C fast path of ``emit`` (``moonbus.bus._fastemit``, built at install) is
what a user gets; the pure-Python reference path (``Bus(native=False)``) is
measured too, as a reference row.

blinker and pyee are dev-only peers: without one, its rows keep the moonbus
figure and say "skipped: peer missing: pip install <peer>" instead of a ratio.

Run it alone with ``python -m moonbus.bench.bus``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from moonbus.bench.harness import BenchRow, missing_peer, ratio_row, skipped_row
from moonbus.bus import Bus, Event
from moonbus.bus.core import native_available

__all__ = ["run"]

AREA = "bus"
EVENT_TYPE = "player:move"
PAYLOAD: dict[str, Any] = {"player": "alice", "x": 12, "y": -3}
TARGET = ">= pyee, every event committed to the log"
NOTE = "moonbus also assigns seq, reads the clock, copies the payload and appends to the log"


class Emitter:
    """One library set up with N handlers; ``loop(n)`` emits n times.

    Every handler reads one payload field and ticks a shared C-level counter
    (``next`` on ``itertools.count``), so ``calls()`` proves the handlers ran
    and each library pays the same per-handler work.
    """

    def __init__(self, loop: Callable[[int], None], counter: Iterator[int],
                 keep: object = None) -> None:
        self.loop = loop
        self._counter = counter
        self._reads = 0
        self._keep = keep  # objects the library only holds weakly

    def calls(self) -> int:
        """How many handler calls happened so far."""
        calls = next(self._counter) - self._reads  # each read advances the counter once
        self._reads += 1
        return calls


def moonbus_emitter(handlers: int, *, native: bool = True) -> Emitter:
    bus = Bus(native=native)
    counter = itertools.count()
    tick = counter.__next__
    for _ in range(handlers):
        def handler(event: Event) -> None:
            tick()
            event.data["x"]
        bus.on(EVENT_TYPE, handler)
    payload = dict(PAYLOAD)

    def loop(n: int) -> None:
        emit = bus.emit
        for _ in range(n):
            emit(EVENT_TYPE, payload)

    return Emitter(loop, counter)


def blinker_emitter(handlers: int) -> Emitter:
    from blinker import Signal

    signal = Signal()
    counter = itertools.count()
    tick = counter.__next__
    receivers = []
    for _ in range(handlers):
        def receiver(sender: object, data: dict[str, Any]) -> None:
            tick()
            data["x"]
        receivers.append(receiver)
        signal.connect(receiver)
    payload = dict(PAYLOAD)

    def loop(n: int) -> None:
        send = signal.send
        for _ in range(n):
            send(EVENT_TYPE, data=payload)

    return Emitter(loop, counter, keep=receivers)  # blinker holds weak references


def pyee_emitter(handlers: int) -> Emitter:
    from pyee import EventEmitter

    emitter = EventEmitter()
    counter = itertools.count()
    tick = counter.__next__
    for _ in range(handlers):
        def listener(data: dict[str, Any]) -> None:
            tick()
            data["x"]
        emitter.on(EVENT_TYPE, listener)
    payload = dict(PAYLOAD)

    def loop(n: int) -> None:
        emit = emitter.emit
        for _ in range(n):
            emit(EVENT_TYPE, payload)

    return Emitter(loop, counter)


def moonbus_python_emitter(handlers: int) -> Emitter:
    return moonbus_emitter(handlers, native=False)


EMITTERS: dict[str, Callable[[int], Emitter]] = {
    "moonbus": moonbus_emitter,
    "moonbus-python": moonbus_python_emitter,
    "blinker": blinker_emitter,
    "pyee": pyee_emitter,
}


# The emitters that need a package moonbus does not depend on -> that package.
PEERS = {"blinker": "blinker", "pyee": "pyee"}


def _ns_per_call(loop: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    loop(n)
    return (time.perf_counter() - start) / n * 1e9


def measure(handlers: int, n: int, rounds: int,
            libraries: Collection[str] | None = None) -> dict[str, float]:
    """Best ns per emit for each library (all, or ``libraries``), measured in
    interleaved rounds."""
    emitters = {name: make(handlers) for name, make in EMITTERS.items()
                if libraries is None or name in libraries}
    warm_up = min(n, 2_000)  # fills caches and lets the adaptive interpreter specialize
    for emitter in emitters.values():
        emitter.loop(warm_up)
    best = dict.fromkeys(emitters, float("inf"))
    for _ in range(rounds):
        for name, emitter in emitters.items():
            best[name] = min(best[name], _ns_per_call(emitter.loop, n))
    for name, emitter in emitters.items():
        if emitter.calls() != (warm_up + rounds * n) * handlers:
            raise RuntimeError(f"{name}: handlers were not called once per emit")
    return best


def _against(name: str, ours: float, peer: str, theirs: float | None, missing: str | None,
             **row: Any) -> BenchRow:
    """A row against ``peer``, or ours alone when the peer is missing."""
    if theirs is None:
        return skipped_row(AREA, name, "ns/emit", missing or "peer not measured", peer=peer,
                           value=ours, target=row.get("target", ""))
    return ratio_row(AREA, name, ours=ours, peer=peer, theirs=theirs, unit="ns/emit",
                     higher_is_better=False, **row)


def run(quick: bool) -> list[BenchRow]:
    """Rows for 1 and 10 handlers, each against pyee (the target) and blinker."""
    n, rounds = (5_000, 3) if quick else (100_000, 7)
    missing = {lib: missing_peer(lib, package) for lib, package in PEERS.items()}
    libraries = [lib for lib in EMITTERS if missing.get(lib) is None]
    rows: list[BenchRow] = []
    path = "C fast path" if native_available() else "pure-Python path (C fast path not built)"
    for handlers in (1, 10):
        name = f"bus emit, {handlers} Python handler{'s' if handlers > 1 else ''}"
        best = measure(handlers, n, rounds, libraries)
        pyee, blinker = best.get("pyee"), best.get("blinker")
        rows.append(_against(
            name, best["moonbus"], "pyee EventEmitter.emit", pyee, missing["pyee"],
            min_ratio=1.0, target=TARGET, note=f"{path}; {NOTE}",
        ))
        rows.append(_against(
            f"{name} (pure-Python path)", best["moonbus-python"], "pyee EventEmitter.emit",
            pyee, missing["pyee"], min_ratio=None,
            target="reference (no target): Bus(native=False)",
        ))
        rows.append(_against(
            name, best["moonbus"], "blinker Signal.send", blinker, missing["blinker"],
            min_ratio=None, target="reference (no target)",
        ))
    return rows


if __name__ == "__main__":
    for row in run(quick=False):
        print(f"{row.name:<30} {row.value:8.0f} {row.unit}  vs {row.peer:<24}"
              f" {row.peer_value or 0:8.0f}  ratio {row.ratio or 0:5.2f}  ok={row.ok}")
