"""FrozenData: the C emit path's frozen event data (see _fastemit.c).

It replaces dict + mappingproxy for the common payload, so it must read,
compare, copy, pickle and encode exactly like the proxy the Python path
builds, stay read-only, and never be tracked by the cyclic collector.
"""

from __future__ import annotations

import copy
import gc
import json
import pickle
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.bus import Bus
from moonbus.bus.core import native_available
from moonbus.bus.event import FROZEN_MAPPING_TYPES, thaw, to_jsonable
from moonbus.store.event_codec import encode_data

pytestmark = pytest.mark.skipif(not native_available(), reason="the C fast path is not built")

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False), st.text(max_size=8))
payloads = st.dictionaries(st.text(max_size=6), scalars, max_size=32)


def _frozen(data: dict[str, Any]) -> Any:
    from moonbus.bus._fastemit import FrozenData

    return FrozenData(data)


@given(payloads)
def test_reads_like_the_proxy_of_the_same_dict(data: dict[str, Any]) -> None:
    frozen, proxy = _frozen(data), MappingProxyType(dict(data))
    assert isinstance(frozen, Mapping)
    assert type(frozen) in FROZEN_MAPPING_TYPES
    assert len(frozen) == len(proxy) and list(frozen) == list(proxy)
    assert list(frozen.items()) == list(proxy.items())
    assert list(frozen.values()) == list(proxy.values())
    assert list(reversed(frozen)) == list(reversed(proxy))
    for key in data:
        assert frozen[key] is data[key] and key in frozen
        assert frozen.get(key) is data[key]
    assert frozen == proxy and proxy == frozen and frozen == data
    assert (frozen != data) is False
    assert frozen.copy() == data and type(frozen.copy()) is dict
    assert frozen | {"zz": 1} == proxy | {"zz": 1}
    assert {"zz": 1} | frozen == {"zz": 1} | proxy
    assert thaw(frozen) == data and to_jsonable(frozen) == to_jsonable(proxy)
    assert encode_data(frozen) == encode_data(proxy)
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    assert copy.deepcopy(frozen) == frozen


def test_missing_keys_and_bad_keys_fail_as_a_dict_does() -> None:
    frozen = _frozen({"a": 1})
    with pytest.raises(KeyError, match="'b'"):
        frozen["b"]
    assert frozen.get("b") is None and frozen.get("b", 7) == 7 and "b" not in frozen
    with pytest.raises(TypeError, match="unhashable"):
        frozen[["a"]]  # type: ignore[index]
    assert 1 not in frozen and frozen != {"a": 2} and frozen != [("a", 1)]


def test_it_is_read_only_unhashable_and_holds_only_scalars() -> None:
    frozen = _frozen({"a": 1})
    with pytest.raises(TypeError):
        frozen["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del frozen["a"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="unhashable"):
        hash(frozen)
    with pytest.raises(TypeError, match=r"'b': list"):
        _frozen({"a": 1, "b": [1]})
    with pytest.raises(TypeError, match="str keys"):
        _frozen({1: 1})  # type: ignore[dict-item]
    assert not gc.is_tracked(frozen)
    assert repr(frozen) == "FrozenData({'a': 1})"


def test_the_c_emit_path_freezes_plain_payloads_into_it(emit_path: str) -> None:
    with Bus() as bus:
        seen: list[Any] = []
        bus.on("t", seen.append)
        bus.emit("t")  # the first event of a type learns its route (general path)
        payload = {"name": "ore", "n": 3, "ok": True, "x": 1.5, "none": None}
        event = bus.emit("t", payload)
        payload["n"] = 99  # the event keeps its own copy
    assert seen[1] == event
    if emit_path == "python":  # the reference path keeps dict + proxy
        assert type(event.data) is MappingProxyType and event.data == seen[1].data
        return
    assert type(event.data) in FROZEN_MAPPING_TYPES and event.data["n"] == 3
    assert event.data == {"name": "ore", "n": 3, "ok": True, "x": 1.5, "none": None}
    assert not gc.is_tracked(event.data) and not gc.is_tracked(event)
    assert json.loads(event.to_json())["data"]["n"] == 3


def test_large_payloads_keep_the_proxy() -> None:
    with Bus() as bus:
        bus.on("t", lambda e: None)
        bus.emit("t")
        event = bus.emit("t", {f"k{i}": i for i in range(40)})
    assert type(event.data) is MappingProxyType and event.data["k39"] == 39
