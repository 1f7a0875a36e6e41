"""The memory backend's C int operations (moonbus.shared._fastint) give exactly
what the Python methods give: the same values, the same errors, atomically."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from moonbus.native import load_fast_path
from moonbus.shared import INT_MAX, INT_MIN, SharedStore

_FAST_INT = load_fast_path("moonbus.shared._fastint", env=False).module
IntOp = None if _FAST_INT is None else _FAST_INT.IntOp

needs_c = pytest.mark.skipif(IntOp is None, reason="the C int operations are not built")

START_VALUES: list[Any] = [None, 0, 41, -5, INT_MAX - 1, INT_MIN + 1, INT_MAX, INT_MIN,
                           "text", 1.5, True]
CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("increment", ()), ("increment", (5,)), ("increment", (-7,)), ("increment", (2**70,)),
    ("decrement", ()), ("decrement", (3,)), ("decrement", (INT_MIN,)),
    ("add", (10,)), ("add", ()), ("add", (1.5,)), ("add", (True,)), ("add", ("1",)),
    ("subtract", (4,)), ("subtract", (-(2**63),)), ("subtract", ()),
]


def _outcome(store: SharedStore, op: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        return ("value", op(*args), store.dump())
    except Exception as exc:  # compared by type and message
        return ("error", type(exc), str(exc), store.dump())


def _prepared(start: Any) -> tuple[SharedStore, Any]:
    """A store whose key "k" holds ``start`` (any kind), and an int handle on it
    taken while the key was still free (as a script's handle can outlive a kind change)."""
    store = SharedStore()
    handle = store.int("k")
    if start is not None:
        kind = {int: "int", str: "string", float: "float", bool: "bool"}[type(start)]
        getattr(store, kind)("k").set(start)
    return store, handle


@needs_c
@pytest.mark.parametrize("start", START_VALUES, ids=repr)
@pytest.mark.parametrize(("name", "args"), CALLS, ids=repr)
def test_c_and_python_operations_agree(start: Any, name: str, args: tuple[Any, ...]) -> None:
    (python_store, python_handle), (c_store, c_handle) = _prepared(start), _prepared(start)
    python_op = getattr(python_handle, name)
    c_op = c_handle.native_ops()[name]
    assert type(c_op) is IntOp
    assert _outcome(c_store, c_op, args) == _outcome(python_store, python_op, args)


@needs_c
def test_keywords_and_extra_arguments_go_to_the_python_method() -> None:
    store = SharedStore()
    ops = store.int("k").native_ops()  # type: ignore[attr-defined]
    assert ops["increment"](n=4) == 4
    with pytest.raises(TypeError):
        ops["add"](1, 2)


@needs_c
def test_a_closed_store_refuses_as_the_python_method_does() -> None:
    store = SharedStore()
    handle = store.int("k")
    ops = handle.native_ops()  # type: ignore[attr-defined]
    store.close()
    with pytest.raises(Exception) as c_error:
        ops["increment"]()
    with pytest.raises(Exception) as py_error:
        handle.increment()
    assert (type(c_error.value), str(c_error.value)) == (type(py_error.value),
                                                          str(py_error.value))


@needs_c
def test_c_and_python_increments_from_threads_lose_nothing() -> None:
    store = SharedStore()
    handle = store.int("k")
    fast = handle.native_ops()["increment"]  # type: ignore[attr-defined]

    def work(op: Any) -> None:
        for _ in range(20_000):
            op()

    threads = [threading.Thread(target=work, args=(op,))
               for op in (fast, handle.increment, fast, handle.increment)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handle.get() == 80_000


def test_the_switch_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    assert SharedStore().int("k").native_ops() == {}  # type: ignore[attr-defined]


def test_ci_builds_the_c_int_operations() -> None:
    if os.environ.get("CI") == "true" and not os.environ.get("MOONBUS_PURE_PYTHON"):
        assert IntOp is not None


@needs_c
@pytest.mark.parametrize("start", START_VALUES, ids=repr)
@pytest.mark.parametrize(("name", "args"), CALLS, ids=repr)
def test_quick_does_the_plain_case_or_nothing(start: Any, name: str, args: tuple[Any, ...]) -> None:
    """``op.quick`` (what Lua calls first, moonbus.lua.fastconvert) gives the
    Python method's value, or NotImplemented with the store untouched: then
    Lua calls the op itself, whose Python method raises its own error."""
    (python_store, python_handle), (c_store, c_handle) = _prepared(start), _prepared(start)
    before = c_store.dump()
    quick = c_handle.native_ops()[name].quick
    result = quick(*args)
    expected = _outcome(python_store, getattr(python_handle, name), args)
    plain = expected[0] == "value" and all(type(a) is int and abs(a) < 2**62 for a in args)
    if result is NotImplemented:
        assert c_store.dump() == before
        assert not plain  # the plain case is C's to do
    else:
        assert ("value", result, c_store.dump()) == expected


@needs_c
def test_quick_on_a_closed_store_does_nothing() -> None:
    store = SharedStore()
    ops = store.int("k").native_ops()  # type: ignore[attr-defined]
    ops["increment"]()
    store.close()
    assert ops["increment"].quick() is NotImplemented
    assert ops["add"].quick(2) is NotImplemented
