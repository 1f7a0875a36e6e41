"""The conformance suite against the in-memory backend, plus memory-only checks.

Every test runs on the store of C int cells (when ``moonbus.shared._fastint``
is built) and on the pure-Python store of plain ints (``tests.native_paths``):
both must behave the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moonbus.errors import ConfigError, SharedValueError
from moonbus.native import load_fast_path
from moonbus.shared import SharedStore
from tests.native_paths import both_paths
from tests.shared.conformance import *  # noqa: F403
from tests.shared.conformance_props import *  # noqa: F403

path = both_paths(load_fast_path("moonbus.shared._fastint").on)


@pytest.fixture
def store() -> Iterator[SharedStore]:
    shared = SharedStore()
    yield shared
    shared.close()


def test_from_url_memory() -> None:
    with SharedStore.from_url("memory://") as store:
        store.int("a").increment()
        assert store.url == "memory://"
        assert store.dump() == {"a": 1}


@pytest.mark.parametrize("url", ["memory://host", "memory:///path", "ftp://x", "nonsense", ""])
def test_from_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="URL"):
        SharedStore.from_url(url)


def test_configurable_limits() -> None:
    store = SharedStore(max_string_bytes=4, max_depth=2)
    store.string("s").set("abcd")
    with pytest.raises(SharedValueError, match="limit of 4"):
        store.string("s").append("e")
    table = store.table("t")
    table.set("k", {"a": 1})
    with pytest.raises(SharedValueError, match="deeper"):
        table.set("k", {"a": {"b": 1}})
    with pytest.raises(SharedValueError, match="max_depth"):
        SharedStore(max_depth=0)
    with pytest.raises(SharedValueError, match="max_string_bytes"):
        SharedStore(max_string_bytes=-1)


def test_separate_stores_do_not_share() -> None:
    one, two = SharedStore(), SharedStore()
    one.int("x").set(1)
    assert not two.contains("x")
