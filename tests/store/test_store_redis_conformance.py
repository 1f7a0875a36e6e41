"""The shared EventStore contract, run against the Redis Streams backend.

Each test gets its own key prefix on the shared Redis (127.0.0.1:6379) and
every key under it is deleted afterwards. Without a reachable Redis the tests
skip with the reason, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_conformance import Backend, EventStoreConformance, Stores
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

from moonbus.store.base import EventStore, StoreSettings
from moonbus.store.redis_backend import RedisEventStore

pytestmark = pytest.mark.redis


# Tiny pages make every query span many pages (and page budgets), so the
# paging logic meets every case the suite has.
_PAGE_SIZES = {"redis": 1000, "redis-tiny-pages": 2}


@pytest.fixture(params=sorted(_PAGE_SIZES))
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    redis_or_skip()
    prefix = unique_prefix()
    page_size = _PAGE_SIZES[request.param]

    def open_store(key: str, settings: StoreSettings | None) -> EventStore:
        return RedisEventStore(
            REDIS_URL, prefix=f"{prefix}:{key}", settings=settings, page_size=page_size
        )

    opened = Stores(Backend(request.param, True, open_store))
    try:
        yield opened
    finally:
        opened.close_all()
        delete_prefix(prefix)


class TestRedisConformance(EventStoreConformance):
    pass
