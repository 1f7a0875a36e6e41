"""Subscriptions and the per-type handler lists ("routes") the bus delivers through.

A ``Subscription`` is the handle ``Bus.on``/``once`` return. A ``Route`` is the
list of handlers for one event type, in registration order, built by the bus
under its registry lock and cached until the next subscribe or cancel.

Routes exist for speed: delivering an event to a route of plain handlers (sync,
not ``once``) is one loop over a list of callables. To keep "a handler cancelled
while an event is being delivered does not get that event" without a check per
handler, cancelling a subscription overwrites its slot in the route being
delivered with a no-op (``Route.skip``). Only the bus touches routes: the
delivering thread reads them, the registry lock guards building and patching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from moonbus.bus.event import Event

if TYPE_CHECKING:
    from moonbus.bus.registry import BusRegistry

__all__ = ["Handler", "Route", "Subscription"]

Handler = Callable[[Event], Any]


class Subscription:
    """A handle to one subscription. Call it, or ``cancel()`` it, to unsubscribe.

    ``errors`` counts the times the handler raised. Attributes are read-only
    by convention; the bus owns them.
    """

    __slots__ = ("_bus", "active", "errors", "handler", "is_async", "loop", "once", "owner",
                 "pattern")

    def __init__(
        self,
        bus: BusRegistry,
        pattern: str,
        handler: Handler,
        *,
        once: bool,
        loop: asyncio.AbstractEventLoop | None,
        owner: str | None,
    ) -> None:
        self._bus = bus
        self.pattern = pattern
        self.handler = handler
        self.once = once
        self.loop = loop
        self.is_async = loop is not None
        self.owner = owner
        self.active = True
        self.errors = 0

    @property
    def plain(self) -> bool:
        """True for a sync handler that stays subscribed (the bus's fast path)."""
        return not (self.once or self.is_async)

    def cancel(self) -> bool:
        """Unsubscribe. Returns False when it was already inactive.

        Called on the delivering thread (from a handler), the handler gets no
        further event, not even the one being delivered. Called from another
        thread, an event whose delivery has already begun may still reach it.
        """
        return self._bus._remove(self)

    def __call__(self) -> bool:
        return self.cancel()

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        name = getattr(self.handler, "__qualname__", self.handler)
        return f"<Subscription {self.pattern!r} {name!r} {state}>"


class Route:
    """The handlers of one event type, in registration order.

    ``subs`` and ``entries`` are parallel and never change; ``handlers`` starts
    as a copy of ``entries`` and is the list the delivering thread iterates.
    ``plain`` is True when every subscription is a plain sync handler.
    """

    __slots__ = ("entries", "handlers", "plain", "subs")

    def __init__(self, subs: tuple[Subscription, ...]) -> None:
        self.subs = subs
        self.plain = all(sub.plain for sub in subs)
        entries: list[Handler] = []
        seen: set[int] = set()
        for sub in subs:
            handler = sub.handler
            if id(handler) in seen:
                # The same callable twice: wrap it, so each slot is a distinct
                # object and an error can be traced back to its subscription.
                handler = partial(handler)
            seen.add(id(handler))
            entries.append(handler)
        self.entries = tuple(entries)
        self.handlers = entries

    def skip(self, sub: Subscription, noop: Handler) -> None:
        """Replace ``sub``'s slot with ``noop`` (under the bus's registry lock)."""
        for index, candidate in enumerate(self.subs):
            if candidate is sub:
                self.handlers[index] = noop

    def owner(self, handler: Handler) -> Subscription:
        """The subscription whose slot holds ``handler`` (for error reports)."""
        for index, entry in enumerate(self.entries):
            if entry is handler:
                return self.subs[index]
        raise LookupError(f"{handler!r} is not in this route")
