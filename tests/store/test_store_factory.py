"""open_event_store: URL forms, options and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from moonbus.errors import ConfigError, StoreError
from moonbus.store import SqliteEventStore, StoreSettings, open_event_store


def opened(url: str, **kwargs: object) -> SqliteEventStore:
    store = open_event_store(url, **kwargs)  # type: ignore[arg-type]
    assert isinstance(store, SqliteEventStore)
    store.close()
    return store


def test_relative_absolute_and_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert opened("sqlite:///rel.db").path == "rel.db"
    assert (tmp_path / "rel.db").exists()
    absolute = tmp_path / "abs.db"
    assert opened(f"sqlite:///{absolute}").path == str(absolute)  # sqlite:////abs
    assert opened(str(tmp_path / "plain?x=1.db")).path == str(tmp_path / "plain?x=1.db")
    assert opened("sqlite:///with%20space.db").path == "with space.db"


def test_memory_forms() -> None:
    for url in ("sqlite://:memory:", "sqlite:///:memory:", ":memory:"):
        assert opened(url).path == ":memory:"


def test_options(tmp_path: Path) -> None:
    store = open_event_store(
        f"sqlite:///{tmp_path}/f.db?mode=fast&batch_size=50&flush_interval=0.2&lock_timeout=1.5"
        "&sync=full"
    )
    try:
        assert isinstance(store, SqliteEventStore)
        assert (store.mode, store.lock_timeout) == ("fast", 1.5)
        assert store._writer is not None
        assert (store._writer.batch_size, store._writer.flush_interval) == (50, 0.2)
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
    assert opened(f"sqlite:///{tmp_path}/d.db").mode == "journal"  # the default for a file
    assert opened(str(tmp_path / "p.db")).mode == "journal"
    assert opened(f"sqlite:///{tmp_path}/c.db?mode=durable").mode == "durable"
    assert opened("sqlite://:memory:").mode == "durable"  # no file: no journal


def test_settings_are_passed_through(tmp_path: Path) -> None:
    settings = StoreSettings(retention_count=3)
    with open_event_store(str(tmp_path / "s.db"), settings) as store:
        assert store.settings is settings


def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        open_event_store(f"sqlite:///{tmp_path}/missing.db", create=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0?colour=red", "unknown option 'colour'"),
        ("rediss://example:6380/0?prune_every=often", "prune_every='often' is not a number"),
        ("redis://127.0.0.1:6379/0?prefix=a&prefix=b", "given twice"),
        ("redis://127.0.0.1:6379/0?max_events=-1", "max_events must be a number >= 0"),
        ("redis://127.0.0.1:6379/0?prefix=", "prefix must be a non-empty string"),
        ("postgres://db/events", "unknown scheme 'postgres'"),
        ("sqlite:///x.db?mode=eventual", "mode must be durable, fast or journal"),
        ("sqlite:///x.db?sync=off", "sync must be normal or full"),
        ("sqlite:///x.db?batch_size=many", "batch_size='many' is not a number"),
        ("sqlite:///x.db?colour=red", "unknown option 'colour'"),
        ("sqlite:///x.db?mode=fast&mode=durable", "given twice"),
        ("sqlite:///x.db?mode", "malformed query string"),
        ("sqlite://host/x.db", "a host name is not allowed"),
        ("sqlite:x.db", "expected sqlite:///path"),
        ("sqlite:///", "names no file"),
        ("", "non-empty"),
    ],
)
def test_bad_urls_name_the_url(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        open_event_store(url)
    if url:
        assert repr(url) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was created
