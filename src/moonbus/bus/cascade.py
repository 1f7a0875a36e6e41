"""Event cascades: each top-level ``emit`` bounds the events its handlers cause.

Why (SPEC §4b): a handler that emits the event it handles, twice, doubles the
queue with every generation; before these limits the host's ``emit`` never
returned and memory grew by tens of MiB a second. Every event a handler
emits while handling an event belongs to the *cascade* of the top-level
``emit`` that started the chain, one level deeper than its cause. A cascade
may hold at most ``max_events`` caused events, none deeper than
``max_depth``; the emit that would pass either limit raises ``CascadeError``
in the emitting handler before anything is committed (no seq is taken), and
the events already committed are delivered as usual, so the storm ends and
the host's ``emit`` returns.

The defaults are far above what a game does: one fact (a kill) causing a
handful of others (xp, level up, loot, chat) is depth 3 and tens of events;
16 levels and 1,000 events per top-level emit leave well over an order
of magnitude of room. The count is also what bounds a storm's *time*: every
caused event is committed and delivered inside the top-level emit (or on the
event thread), and others wait for the bus meanwhile. A doubling storm cut
at 1,000 took ~0.1 s and one cut at 10,000 ~0.7 s (a stepped runtime on a
2-core machine at load 9, most of it the handler errors of the refused
emits; ``moonbus bench --only containment`` has the row). A limit must be at
least 1 (0 would forbid handlers from emitting at all, which scripts rely
on). Limits are read at every caused emit from a
``CascadeSettings`` object (the runtime's ``HostSettings``), so
``settings.set`` changes them live.

Following the chain across threads (deferred delivery): the bus knows the
event it is delivering on its own thread, but handlers that run later (on
the event thread, or a script's main engine) say which event they handle:
``Bus.emit(..., cause=seq_or_link)``. The tracker maps the seq of every
caused event (and of each root that has caused one) to its ``CascadeLink``
until every handler of that event has run: the bus releases them at the end
of a drain; with deferred delivery (``held``) the event queue releases them
as it passes them (``Bus.release_cascades``). The table is bounded
(``table_limit``): when it is full, further caused events are refused like a
cut cascade, so the table can never grow without bound.

Threads: ``link``, ``child``, ``committed`` run under the bus's emit lock
(the delivering or emitting thread); ``release_through`` also runs there
(the deferred path takes the emit lock first). Counters are read without a
lock for ``statistics()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moonbus.errors import CascadeError, ConfigError

__all__ = [
    "DEFAULT_MAX_CASCADE_DEPTH",
    "DEFAULT_MAX_CASCADE_EVENTS",
    "CascadeBudget",
    "CascadeLimits",
    "CascadeLink",
    "CascadeSettings",
    "CascadeStatistics",
    "CascadeTracker",
]

DEFAULT_MAX_CASCADE_DEPTH = 16
DEFAULT_MAX_CASCADE_EVENTS = 1_000
_MIN_TABLE = 65_536


class CascadeSettings(Protocol):
    """Where the limits are read, at each caused emit (so a live change,
    ``settings.set max_cascade_events 500``, applies at once). The runtime
    passes its ``HostSettings``; a bare ``Bus`` its own ``CascadeLimits``."""

    max_cascade_depth: int
    max_cascade_events: int


@dataclass
class CascadeLimits:
    """The cascade limits of a bus built without a runtime."""

    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH
    max_cascade_events: int = DEFAULT_MAX_CASCADE_EVENTS


class CascadeBudget:
    """The count of one top-level emit's cascade (shared by all its links)."""

    __slots__ = ("cut", "events")

    def __init__(self) -> None:
        self.events = 0  # caused events committed so far
        self.cut = False  # a limit was reached (counted once per cascade)


# One event's place in a cascade: (its cascade's budget, its depth; a root is
# 0). A plain tuple: one is made for every caused event, on the emit path.
CascadeLink = tuple[CascadeBudget, int]


@dataclass(frozen=True)
class CascadeStatistics:
    """``cut``: cascades ended by a limit; ``refused``: emits refused (every
    refused emit, several per cut cascade); ``in_flight``: links kept."""

    cut: int
    refused: int
    in_flight: int


def check_limits(limits: CascadeSettings) -> None:
    """``ConfigError`` naming a limit that is not an integer of at least 1."""
    for name in ("max_cascade_depth", "max_cascade_events"):
        value = getattr(limits, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer of at least 1, got {value!r}")


class CascadeTracker:
    """The cascade limits of one bus and the links of the events in flight."""

    def __init__(self, limits: CascadeSettings) -> None:
        check_limits(limits)
        self.limits = limits
        self.held = False  # a deferred queue releases the links (see module docstring)
        # seq -> link, in commit order (read by the bus's drain without a call)
        self.links: dict[int, CascadeLink] = {}
        self.cut = 0
        self.refused = 0

    @property
    def table_limit(self) -> int:
        """Links kept at most (events of cascades whose handlers may still run)."""
        return max(_MIN_TABLE, 4 * self.limits.max_cascade_events)

    def __len__(self) -> int:
        return len(self.links)

    def get(self, seq: int) -> CascadeLink | None:
        """The link of a caused event (or of a root that caused one), if kept."""
        return self.links.get(seq)

    @staticmethod
    def root() -> CascadeLink:
        """A new cascade, for a top-level event."""
        return (CascadeBudget(), 0)

    def link(self, seq: int) -> CascadeLink:
        """The link of event ``seq``: kept, or a new root kept from now on."""
        found = self.links.get(seq)
        if found is None:
            found = self.links[seq] = self.root()
        return found

    def child(self, parent: CascadeLink) -> CascadeLink:
        """The link of an event caused by ``parent``'s event, or ``CascadeError``
        naming the limit it would pass (nothing is committed then)."""
        budget, depth = parent
        limits = self.limits
        most = limits.max_cascade_events
        if (depth < limits.max_cascade_depth and budget.events < most
                and len(self.links) < (4 * most if most > _MIN_TABLE // 4 else _MIN_TABLE)):
            return (budget, depth + 1)
        self._refuse(budget)
        if depth >= limits.max_cascade_depth:
            raise CascadeError(
                f"event cascade too deep: an event caused at depth {depth + 1} "
                f"(max_cascade_depth={limits.max_cascade_depth}); the emit was refused"
            )
        if budget.events >= most:
            raise CascadeError(
                f"event cascade too long: {budget.events} events caused by one top-level "
                f"emit (max_cascade_events={most}); the emit was refused"
            )
        # No count in the text: one text per refusal lets the handler-error
        # log count the repeats (moonbus.host.error_log) instead of logging each.
        raise CascadeError(
            f"too many caused events in flight (at most {self.table_limit} = "
            f"4 x max_cascade_events); the emit was refused"
        )

    def _refuse(self, budget: CascadeBudget) -> None:
        self.refused += 1
        if not budget.cut:
            budget.cut = True
            self.cut += 1

    def committed(self, seq: int, link: CascadeLink) -> None:
        """The event ``seq`` caused under ``link`` was committed: count and keep it."""
        link[0].events += 1
        self.links[seq] = link

    def release_through(self, seq: int) -> int:
        """Forget the links of events up to ``seq`` (their handlers have all run);
        returns how many were dropped. Links are kept in commit order, except
        roots, which are added when they first cause an event: those may
        stay a little longer than needed, never less."""
        links = self.links
        dropped = 0
        while links:
            first = next(iter(links))
            if first > seq:
                break
            del links[first]
            dropped += 1
        return dropped

    def statistics(self) -> CascadeStatistics:
        return CascadeStatistics(cut=self.cut, refused=self.refused, in_flight=len(self.links))
