"""The durable event store: the interface, the SQLite backend and URL dispatch."""

from moonbus.store.base import EventStore, StoreSettings, StoreStatistics
from moonbus.store.factory import open_event_store
from moonbus.store.sqlite import SqliteEventStore

__all__ = [
    "EventStore",
    "SqliteEventStore",
    "StoreSettings",
    "StoreStatistics",
    "open_event_store",
]
