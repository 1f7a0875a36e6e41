"""Row codec: stored JSON is Event.to_json's encoding, and decodes to frozen data."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.bus.event import Event, freeze, to_jsonable
from moonbus.store import event_codec
from moonbus.store.event_codec import (
    StoredData,
    decode_data,
    encode_data,
    row_json_line,
    row_to_event,
)
from moonbus.store.sqlite_query import merge_rows

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
_data = st.dictionaries(st.text(max_size=6), _values, max_size=5)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@given(data=_data, tick=st.one_of(st.none(), st.integers(-5, 10**9)), source=st.text(max_size=5))
def test_encoding_round_trips(data: dict[str, Any], tick: int | None, source: str) -> None:
    event = Event.create("t:ü", data, seq=7, tick=tick, source=source, ts=123)
    text = encode_data(event.data)
    assert text == _compact(to_jsonable(event.data))
    decoded = decode_data(text)
    assert decoded == event.data
    assert _frozen(decoded)
    row = (event.seq, event.tick, event.type, event.ts, event.source, text)
    assert row_json_line(row) == event.to_json()
    again = row_to_event(row)
    assert again == event
    assert again.to_json() == event.to_json()
    assert encode_data(again.data) == text


def test_pure_python_encoder_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    event = Event.create("t", {"a": [1, 2.5, {"b": None}], "é": "ü"}, seq=1)
    fast = encode_data(event.data)
    monkeypatch.setattr(event_codec, "_FAST_ENCODE", None)
    assert encode_data(event.data) == fast == _compact(to_jsonable(event.data))


def _frozen(value: Any) -> bool:
    if isinstance(value, Mapping):
        return not isinstance(value, dict) and all(_frozen(v) for v in value.values())
    if isinstance(value, list):
        return False
    if isinstance(value, tuple):
        return all(_frozen(v) for v in value)
    return True


def test_decode_shapes() -> None:
    assert decode_data("{}") == {}
    assert decode_data('{"a":[1,{"b":[]}]}') == freeze({"a": [1, {"b": []}]})
    assert isinstance(decode_data('{"a":{"b":1}}')["a"], Mapping)
    assert StoredData('{"x":1}') == StoredData('{"x": 1}')
    event = row_to_event((1, 2, "t", 3, "s", '{"a":[1,2]}'))
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.deepcopy(event).data["a"] == (1, 2)


def test_merge_rows_keeps_seq_order_and_limits() -> None:
    def rows(*seqs: int) -> list[tuple[int, None, str, int, str, str]]:
        return [(seq, None, "t", 0, "s", "{}") for seq in seqs]

    streams = [rows(1, 4, 9), rows(2, 3, 10), rows()]
    assert [r[0] for r in merge_rows(streams, limit=None, newest=False)] == [1, 2, 3, 4, 9, 10]
    assert [r[0] for r in merge_rows(streams, limit=4, newest=False)] == [1, 2, 3, 4]
    assert [r[0] for r in merge_rows(streams, limit=4, newest=True)] == [3, 4, 9, 10]
    assert list(merge_rows(streams, limit=0, newest=True)) == []
