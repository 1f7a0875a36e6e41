"""--option parsing, typing and script names (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.errors import ConfigError
from moonbus.session.script_options import (
    OptionSetting,
    check_targets,
    options_for,
    parse_option,
    typed_value,
    unique_names,
)


def test_parse_option() -> None:
    assert parse_option("ore=iron") == OptionSetting(None, "ore", "iron")
    assert parse_option("mining:ore=iron") == OptionSetting("mining", "ore", "iron")
    assert parse_option("mining#2:ore=a=b") == OptionSetting("mining#2", "ore", "a=b")
    assert parse_option("msg=a:b") == OptionSetting(None, "msg", "a:b")
    assert parse_option("empty=") == OptionSetting(None, "empty", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [("ore", "expected KEY=VALUE"), ("=x", "empty option name"), (":k=v", "empty script name"),
     ("s: =v", "empty option name")],
)
def test_parse_option_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_option(text)
    assert repr(text) in str(info.value)


def test_typed_value() -> None:
    assert typed_value("true") is True
    assert typed_value("false") is False
    assert typed_value("42") == 42 and isinstance(typed_value("42"), int)
    assert typed_value("-7") == -7
    assert typed_value("2.5") == 2.5
    assert typed_value("1e3") == 1000.0
    assert typed_value("iron") == "iron"
    assert typed_value("True") == "True"
    assert typed_value("") == ""
    assert typed_value(str(2**63)) == str(2**63)  # beyond Lua integers: stays text


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_typed_integers_round_trip(n: int) -> None:
    assert typed_value(str(n)) == n


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_typed_floats_round_trip(x: float) -> None:
    value = typed_value(repr(x))
    assert value == x


def test_unique_names() -> None:
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]
    assert unique_names(["a#2", "a", "a"]) == ["a#2", "a", "a#3"]


@given(st.lists(st.sampled_from(["a", "b", "a#2", "c"]), max_size=12))
def test_unique_names_are_unique(bases: list[str]) -> None:
    names = unique_names(bases)
    assert len(set(names)) == len(names) == len(bases)
    assert all(n == b or n.startswith(b + "#") for n, b in zip(names, bases, strict=True))


def test_options_for_targets_and_types() -> None:
    settings = [parse_option(t) for t in ("n=1", "mining:n=2", "mining#2:n=3", "label=5")]
    assert options_for("mining", "mining", settings, {}) == {"n": 2, "label": 5}
    assert options_for("mining#2", "mining", settings, {}) == {"n": 3, "label": 5}
    assert options_for("chat", "chat", settings, {}) == {"n": 1, "label": 5}
    # With a manifest default the text is kept for the host to convert.
    assert options_for("chat", "chat", settings, {"label": "x"}) == {"n": 1, "label": "5"}


def test_check_targets() -> None:
    check_targets([parse_option("mining:n=1")], ["mining#2"], ["mining"])
    with pytest.raises(ConfigError, match=r"no script named 'chat' \(scripts: mining, mining#2\)"):
        check_targets([parse_option("chat:n=1")], ["mining", "mining#2"], ["mining", "mining"])
