"""Event bus: immutable events, global order, subscriptions, bounded log."""

from moonbus.bus.bus import Bus, BusStatistics, Subscription
from moonbus.bus.event import Event

__all__ = ["Bus", "BusStatistics", "Event", "Subscription"]
