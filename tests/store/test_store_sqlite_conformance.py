"""The shared EventStore contract, run against every SQLite configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_conformance import Backend, EventStoreConformance, Stores

from moonbus.store.base import EventStore, StoreSettings
from moonbus.store.sqlite import SqliteEventStore

_CONFIGS = {
    "sqlite-durable": ("file", "durable"),
    "sqlite-fast": ("file", "fast"),
    "sqlite-memory": ("memory", "durable"),
    "sqlite-memory-fast": ("memory", "fast"),
}


@pytest.fixture(params=sorted(_CONFIGS))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    where, mode = _CONFIGS[request.param]

    def open_store(key: str, settings: StoreSettings | None) -> EventStore:
        path = ":memory:" if where == "memory" else str(tmp_path / f"{key}.db")
        return SqliteEventStore(path, mode=mode, settings=settings)  # type: ignore[arg-type]

    opened = Stores(Backend(request.param, where == "file", open_store))
    yield opened
    opened.close_all()


class TestSqliteConformance(EventStoreConformance):
    pass
