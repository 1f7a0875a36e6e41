"""The call state ``LuaEngine`` shares with the C delivery (``lua/call_state.py``).

What this guards (issue 17: "renaming any field that a fast path relies on
makes a test fail"): the C type's members are exactly the Python twin's
slots, each member is the struct field of the same name, the engine (engine.py
and its bases guarded.py and call_outcome.py) touches
the state through those names only, and the C delivery reads what Python
writes and writes what Python reads (token, depth, closed, the pending
abort). The two source checks run on a renamed copy too, to show they fail.
The probed ``LUA_REGISTRYINDEX`` is checked by the deliveries working at all
and by its documented shape.
"""

from __future__ import annotations

import ast
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from moonbus.lua.call_state import CALL_STATE_FIELDS, PyCallState, make_call_state
from moonbus.lua.engine import LuaEngine
from moonbus.lua.fastcall import FAST_CALL
from moonbus.lua.sandbox import SandboxFactory
from moonbus.native import load_fast_path

LUA = Path(__file__).resolve().parents[2] / "src" / "moonbus" / "lua"
DELIVER = """
total = 0
return function(sub_id, e, tick, seq, kind)
  total = total + e.x
  return true
end
"""


def _fast() -> Any:
    fast = load_fast_path(FAST_CALL)
    if fast.module is None:
        if os.environ.get("CI") == "true" and not os.environ.get("MOONBUS_PURE_PYTHON"):
            pytest.fail(f"CI builds the C fast paths, but {FAST_CALL} is off: {fast.reason}")
        pytest.skip(f"{FAST_CALL} off: {fast.reason}")
    return fast.module


# ------------------------------------------------------------ source checks
def member_fields(header: str) -> dict[str, str]:
    """``{member name: struct field}`` of ``callstate_members`` in ``_callstate.h``,
    and of the lock getters (``callstate_get_<name>`` returns ``&self-><name>``'s view)."""
    table = header.split("callstate_members[] = {", 1)[1].split("{NULL}", 1)[0]
    pairs = dict(re.findall(r'\{"(\w+)",\s*T_\w+,\s*offsetof\(CallState,\s*(\w+)\)', table))
    getters = header.split("callstate_getset[] = {", 1)[1].split("{NULL", 1)[0]
    for name, getter in re.findall(r'\{"(\w+)",\s*\(getter\)(\w+)', getters):
        body = header.split(f"{getter}(CallState *self, void *closure)", 1)[1].split("}", 1)[0]
        field = re.search(r"&self->(\w+),", body)
        pairs[name] = field.group(1) if field else "?"
    return pairs


def fields_used(engine_source: str) -> set[str]:
    """Attribute names engine.py reads or writes on its call state (``cs.X``, ``self._cs.X``)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(engine_source)):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if (isinstance(owner, ast.Name) and owner.id == "cs") or (
            isinstance(owner, ast.Attribute) and owner.attr == "_cs"
        ):
            used.add(node.attr)
    return used


def test_each_c_member_is_the_struct_field_of_its_name() -> None:
    members = member_fields((LUA / "_callstate.h").read_text(encoding="utf-8"))
    assert set(members) == CALL_STATE_FIELDS
    assert all(name == field for name, field in members.items()), members


# The modules of LuaEngine (the class and its bases) that touch the call state.
ENGINE_MODULES = ("engine.py", "guarded.py", "call_outcome.py")


def engine_fields_used() -> set[str]:
    used: set[str] = set()
    for name in ENGINE_MODULES:
        used |= fields_used((LUA / name).read_text(encoding="utf-8"))
    return used


def test_the_engine_uses_exactly_the_call_state_fields() -> None:
    assert engine_fields_used() == CALL_STATE_FIELDS


def test_the_source_checks_fail_on_a_renamed_field() -> None:
    engine = (LUA / "guarded.py").read_text(encoding="utf-8").replace("cs.depth", "cs.level")
    assert "level" in fields_used(engine) - CALL_STATE_FIELDS
    header = (LUA / "_callstate.h").read_text(encoding="utf-8").replace('{"depth"', '{"level"')
    assert set(member_fields(header)) != CALL_STATE_FIELDS


def test_the_c_members_are_the_twin_slots() -> None:
    fast = _fast()
    members = {name for name, value in vars(fast.CallState).items()
               if type(value).__name__ in ("member_descriptor", "getset_descriptor")}
    assert members == set(PyCallState.__slots__) == CALL_STATE_FIELDS


@pytest.mark.parametrize("kind", ["c", "python"])
def test_both_types_start_alike_and_keep_their_locks(kind: str) -> None:
    if kind == "c":
        state: Any = _fast().CallState()
        lock, hook_lock = state.lock, state.hook_lock  # its own C locks, the same each read
        assert type(lock) is type(hook_lock) is _fast().EngineLock
    else:
        lock, hook_lock = threading.RLock(), threading.Lock()
        state = PyCallState(lock=lock, hook_lock=hook_lock)
    assert (state.lock, state.hook_lock, state.chain) == (lock, hook_lock, [])
    assert state.lock is lock and state.hook_lock is hook_lock
    assert (state.token, state.pending_token, state.depth) == (0, 0, 0)
    assert (state.in_call, state.closed) == (False, False)
    assert (state.abort_reason, state.last_reason, state.pending_reason) == (None, None, None)
    state.token = 2**62
    assert state.token == 2**62
    with pytest.raises(AttributeError):
        state.renamed = 1  # slots only: a renamed field cannot appear silently


def test_the_locks_and_chain_are_fixed() -> None:
    state = _fast().CallState()
    for name in ("lock", "hook_lock", "chain"):
        with pytest.raises(AttributeError):
            setattr(state, name, None)  # fixed when made: C caches their methods


def test_make_call_state_follows_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(make_call_state(native=False)) is PyCallState
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    assert type(make_call_state(native=True)) is PyCallState


def test_the_registry_index_was_probed() -> None:
    index = _fast().LUA_REGISTRYINDEX
    # lua.h (5.4): -LUAI_MAXSTACK - 1000, LUAI_MAXSTACK a luaconf setting > 0
    assert index < -1000 and (-index - 1000) > 0


# --------------------------------------------------- C reads what Python writes
@pytest.fixture
def wired() -> Iterator[SimpleNamespace]:
    _fast()
    with SandboxFactory() as factory:
        engine = factory.create("state")
        env = engine.new_env()
        deliver = engine.call(engine.compile(DELIVER, "deliver.lua", env), limit=5.0)[0]
        seen = SimpleNamespace(engine=engine, env=env, fallback=[], failed=[])
        counts = load_fast_path(FAST_CALL).module.DeliveryCounts()  # type: ignore[union-attr]
        seen.counts = counts
        seen.delivery = engine.native_delivery(
            deliver, fallback=lambda sub_id, event: seen.fallback.append(event),
            failed=lambda sub_id, result, failure, reason, limit: seen.failed.append(reason),
            settings=SimpleNamespace(handler_timeout=5.0), counts=counts,
        )
        assert seen.delivery is not None
        try:
            yield seen
        finally:
            engine.close()


def _event(seq: int, x: int = 1) -> tuple[Any, ...]:
    return ("hit", MappingProxyType({"x": x}), seq, None)


def test_c_advances_the_token_python_reads(wired: SimpleNamespace) -> None:
    state = wired.engine.call_state
    before = state.token
    wired.delivery(1, _event(1, x=5))
    assert wired.counts.taken == 1 and wired.fallback == []
    assert wired.env["total"] == 5
    assert state.token == before + 1 and wired.engine.next_token() == before + 2
    assert (state.in_call, state.depth, state.last_reason) == (False, 0, None)


@pytest.mark.parametrize("field", ["depth", "closed"])
def test_c_hands_back_when_python_says_busy_or_closed(wired: SimpleNamespace, field: str) -> None:
    state = wired.engine.call_state
    setattr(state, field, True if field == "closed" else 1)
    event = _event(1)
    wired.delivery(1, event)
    setattr(state, field, False if field == "closed" else 0)
    assert wired.fallback == [event] and wired.counts.handed_back == 1
    assert wired.env["total"] == 0  # C did not run it


@pytest.mark.parametrize(("field", "odd"), [("depth", "0"), ("token", 2**64), ("closed", 0),
                                           ("depth", None)])
def test_c_hands_back_a_field_it_cannot_read(wired: SimpleNamespace, field: str, odd: Any) -> None:
    # C reads each field at its offset and checks its type: anything else (here
    # a str, an int past 64 bits, a falsy non-bool, a deleted field) goes to Python.
    state = wired.engine.call_state
    was = getattr(state, field)
    if odd is None:
        delattr(state, field)
    else:
        setattr(state, field, odd)
    event = _event(1)
    try:
        wired.delivery(1, event)
    finally:
        setattr(state, field, was)
    assert wired.fallback == [event] and wired.counts.handed_back == 1


def test_c_honours_an_abort_recorded_before_the_call(wired: SimpleNamespace) -> None:
    engine = wired.engine
    assert engine.abort(engine.next_token(), "cancel") is False  # recorded, not live
    assert engine.call_state.pending_token == engine.next_token()
    wired.delivery(1, _event(1))
    assert wired.failed == ["cancel"] and wired.env["total"] == 0
    assert engine.call_state.last_reason == "cancel" and not engine.call_state.in_call
    wired.delivery(1, _event(2, x=3))  # the next call runs normally
    assert wired.env["total"] == 3 and wired.failed == ["cancel"]


def test_an_engine_made_with_c_off_keeps_the_python_path() -> None:
    with SandboxFactory(native=False) as factory:
        engine: LuaEngine = factory.create("python")
        try:
            assert type(engine.call_state) is PyCallState
            deliver = engine.compile("return function() return true end", "d.lua",
                                     engine.new_env())
            made = engine.native_delivery(
                engine.call(deliver, limit=1.0)[0], fallback=lambda *a: None,
                failed=lambda *a: None, settings=SimpleNamespace(handler_timeout=1.0),
            )
            assert made is None  # C cannot read a PyCallState's fields
        finally:
            engine.close()


def test_a_delivery_refuses_a_python_call_state() -> None:
    fast = _fast()
    with pytest.raises(TypeError, match="CallState"):
        fast.Delivery(
            engine=object(), call_state=PyCallState(lock=threading.RLock(),
                                                    hook_lock=threading.Lock()),
            watchdog=None, lua_module=None, end_call=None, abort_on_entry=None, runtime=None,
            state=1, lupa_lock=None, global_key="k", fallback=None, failed=None, settings=None,
            budget=None, counts=None,
        )
