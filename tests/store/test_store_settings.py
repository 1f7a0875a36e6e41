"""StoreSettings: checked values, atomic updates, live reads."""

from __future__ import annotations

import pytest

from moonbus.errors import ConfigError
from moonbus.store.base import DEFAULT_RETENTION_TICKS, StoreSettings, check_query, type_list


def test_defaults() -> None:
    settings = StoreSettings()
    assert settings.limits_for("anything") == (DEFAULT_RETENTION_TICKS, None)
    assert DEFAULT_RETENTION_TICKS == 36_000
    assert settings.wants("anything")


def test_per_type_override_and_types_filter() -> None:
    settings = StoreSettings(
        retention_count=10,
        per_type={"tick": {"ticks": 600, "count": None}},
        types=frozenset({"tick"}),
    )
    assert settings.limits_for("tick") == (600, None)
    assert settings.limits_for("chat") == (DEFAULT_RETENTION_TICKS, 10)
    assert settings.types == frozenset({"tick"})
    assert settings.wants("tick") and not settings.wants("chat")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"retention_ticks": -1}, "retention_ticks"),
        ({"retention_count": 1.5}, "retention_count"),
        ({"retention_ticks": True}, "retention_ticks"),
        ({"per_type": {"x": {"days": 3}}}, "unknown limit"),
        ({"per_type": {"x": {"ticks": -3}}}, r"per_type\['x'\]\['ticks'\]"),
        ({"per_type": ["x"]}, "per_type"),
        ({"types": "tick"}, "types"),
        ({"types": [1]}, "types"),
        ({"log_appends": "yes"}, "log_appends"),
        ({"types": None, "log_appends": 1}, "log_appends"),
        ({"colour": "red"}, "unknown store setting 'colour'"),
        ({"_lock": None}, "unknown store setting '_lock'"),
    ],
)
def test_bad_values_change_nothing(changes: dict[str, object], message: str) -> None:
    settings = StoreSettings(retention_ticks=5)
    good = {"per_type": {"y": {"count": 1}}} if "per_type" not in changes else {"types": None}
    with pytest.raises(ConfigError, match=message):
        settings.update(**good, **changes)
    assert (settings.retention_ticks, settings.per_type, settings.types) == (5, {}, None)


def test_bad_values_at_construction() -> None:
    with pytest.raises(ConfigError, match="retention_count"):
        StoreSettings(retention_count=-2)


def test_update_applies() -> None:
    settings = StoreSettings()
    settings.update(retention_ticks=None, retention_count=4, types=None, log_appends=True)
    assert settings.limits_for("a") == (None, 4)
    assert settings.log_appends


def test_query_argument_helpers() -> None:
    assert type_list(None) is None
    assert type_list("a") == ["a"]
    assert type_list(["b", "a", "b"]) == ["b", "a"]
    check_query(1, 2, 0)
    with pytest.raises(ConfigError, match="after_seq"):
        check_query(None, 1.5, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="limit"):
        check_query(None, None, True)
