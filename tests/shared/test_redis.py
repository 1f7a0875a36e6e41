"""The conformance suite against the Redis backend (the shared server at 6379).

Each test gets a store with its own unique key prefix and every key under that
prefix is deleted afterwards. Without a reachable Redis the tests skip with a
reason, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moonbus.shared import SharedStore
from tests.shared.conformance import *  # noqa: F403
from tests.shared.conformance_props import *  # noqa: F403
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

pytestmark = pytest.mark.redis


@pytest.fixture
def store() -> Iterator[SharedStore]:
    redis_or_skip()
    prefix = unique_prefix()
    shared = SharedStore.from_url(REDIS_URL, prefix=prefix)
    try:
        yield shared
    finally:
        shared.close()
        delete_prefix(prefix)
