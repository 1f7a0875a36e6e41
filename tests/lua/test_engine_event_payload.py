"""``LuaEngine.call_event`` takes event data of every mapping type, whether or not
the sandbox was told the bus's frozen types (the sandbox does not import the
bus: the runtime hands ``FROZEN_MAPPING_TYPES`` to the ``SandboxFactory``,
which only makes the copy into Lua take lupa's dict fast path)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from moonbus import Runtime
from moonbus.bus.event import FROZEN_MAPPING_TYPES
from moonbus.lua.sandbox import SandboxFactory

_ECHO = "return function(sub, e, tick, seq, kind) return true, sub, e.a, e.b, tick, seq, kind end"


def _payloads() -> list[Mapping[str, Any]]:
    made: list[Mapping[str, Any]] = [{"a": 1, "b": "x"}, MappingProxyType({"a": 1, "b": "x"})]
    for kind in FROZEN_MAPPING_TYPES:
        if kind is not MappingProxyType:  # the C extension's FrozenData, when built
            made.append(kind({"a": 1, "b": "x"}))
    return made


@pytest.mark.parametrize("frozen", [(), FROZEN_MAPPING_TYPES], ids=["unknown", "bus-types"])
def test_call_event_copies_any_mapping(frozen: Iterable[type]) -> None:
    with SandboxFactory(frozen_mappings=frozen) as factory:
        engine = factory.create("payload")
        try:
            deliver = engine.call(engine.compile(_ECHO, "echo", engine.new_env()), limit=2.0)[0]
            for data in _payloads():
                got = engine.call_event(deliver, 3, data, 7, 9, "ping", limit=2.0)
                assert got == (3, 1, "x", 7, 9, "ping"), type(data)  # the leading ok is consumed
        finally:
            engine.close()


def test_the_runtime_hands_the_bus_types_to_the_sandbox() -> None:
    with Runtime(threaded=False) as rt:
        assert rt.factory.frozen_mappings == FROZEN_MAPPING_TYPES
