"""``?prefix=`` in a shared-store Redis URL chooses the key prefix (for --shared)."""

from __future__ import annotations

import pytest
import redis

from moonbus.errors import ConfigError
from moonbus.shared import SharedStore
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

pytestmark = pytest.mark.redis


def test_prefix_in_the_url_wins_and_is_not_passed_to_redis() -> None:
    redis_or_skip()
    prefix = unique_prefix()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with SharedStore.from_url(f"{REDIS_URL}?prefix={prefix}", prefix="ignored") as store:
            store.int("hits").increment(3)
        assert client.exists(f"{prefix}:global:hits")
        assert not client.exists("ignored:global:hits")
        with SharedStore.from_url(REDIS_URL, prefix=prefix) as again:
            assert again.int("hits").get() == 3
    finally:
        client.close()
        delete_prefix(prefix)


def test_prefix_given_twice_is_refused_without_showing_the_password() -> None:
    url = "redis://u:secret@127.0.0.1:1/0?prefix=a&prefix=b"
    with pytest.raises(ConfigError, match="option 'prefix' given twice") as info:
        SharedStore.from_url(url)
    assert "secret" not in str(info.value)
