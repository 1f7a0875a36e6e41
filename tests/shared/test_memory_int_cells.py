"""The memory backend's int cells (issue 16, ``moonbus.shared._fastint``):
a script's ``shared:int(name):increment()`` runs on a C cell without the GIL
when the handle's cell is cached and live, and on the Python path with the
GIL otherwise. Both paths must give the same values and the same errors as
the pure-Python store (every runtime test here runs on both, see
``tests.native_paths``), and no increment may be lost between Python
threads and Lua engines."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moonbus.errors import ClosedError
from moonbus.lua.fastconvert import native_quick_bind
from moonbus.native import load_fast_path
from moonbus.runtime import Runtime
from moonbus.shared import INT_MAX, INT_MIN, SharedStore
from tests.native_paths import both_paths

_FAST_INT = load_fast_path("moonbus.shared._fastint", env=False).module
needs_c = pytest.mark.skipif(_FAST_INT is None, reason="the C int operations are not built")

path = both_paths(load_fast_path("moonbus.shared._fastint").on)  # this test's store and scripts

COUNTER = """
events:on("go", function(e)
  shared:int("n"):increment()
end)
local kept = shared:int("n")
events:on("op", function(e)
  kept:decrement()
end)
"""


@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    try:
        yield rt
    finally:
        rt.close()


def _load(rt: Runtime, tmp_path: Path, text: str, name: str = "s",
          namespace: str | None = None) -> Any:
    file = tmp_path / f"{name}.lua"
    file.write_text(text, encoding="utf-8")
    host = rt.load(file, namespace=namespace)
    host.start()
    return host


def _emit(rt: Runtime, event: str, times: int = 1) -> None:
    for _ in range(times):
        rt.bus.emit(event)


def _cell(rt: Runtime, namespace: str, name: str) -> Any:
    """The memory store's stored value of a key (an IntCell on the C path)."""
    return rt.shared._backend._state.spaces[namespace][name]  # type: ignore[attr-defined]


def test_python_threads_and_lua_engines_lose_no_increment(tmp_path: Path) -> None:
    rt = Runtime(threaded=True, workers=2, event_delivery="deferred")
    try:
        hosts = [_load(rt, tmp_path, COUNTER, name=f"s{i}", namespace="game") for i in range(3)]
        counter = rt.shared.namespace("game").int("n")

        def python_side() -> None:
            for _ in range(4_000):
                counter.increment()
            for _ in range(1_000):
                counter.add(-2)

        threads = [threading.Thread(target=python_side) for _ in range(3)]
        for thread in threads:
            thread.start()
        for _ in range(400):
            rt.bus.emit("go")
        for _ in range(100):
            rt.bus.emit("op")
        for thread in threads:
            thread.join()
        assert rt.flush_events(30.0)
        assert counter.get() == 3 * (4_000 - 2_000) + 3 * (400 - 100)
        assert [h.handler_errors for h in hosts] == [0, 0, 0]
    finally:
        rt.close()


@pytest.mark.parametrize("how", ["remove", "clear"])
@pytest.mark.parametrize("kind", ["float", "string", "bool", "table"])
def test_a_kind_change_under_a_cached_cell(stepped: Runtime, tmp_path: Path, how: str,
                                           kind: str) -> None:
    host = _load(stepped, tmp_path, COUNTER, name="kinds")
    _emit(stepped, "go", 3)  # the handle, its check and its op have the cell now
    _emit(stepped, "op")
    store = stepped.shared.namespace("kinds")
    assert store.int("n").get() == 2
    store.remove("n") if how == "remove" else store.clear()
    if kind == "table":
        store.table("n").set("a", 1)
    else:
        getattr(store, kind)("n").set({"float": 1.5, "string": "s", "bool": True}[kind])
    _emit(stepped, "go")
    _emit(stepped, "op")
    article = "an" if kind == "int" else "a"
    assert host.errors == [
        f"handler for 'go': kinds.lua:3: shared key 'n' holds {article} {kind}, not an int",
        f"handler for 'op': kinds.lua:7: shared key 'n' holds {article} {kind}, not an int",
    ]
    assert store.dump()["n"] == ({"a": 1} if kind == "table" else getattr(store, kind)("n").get())


@pytest.mark.parametrize("how", ["remove", "clear"])
def test_a_removed_key_starts_from_zero_and_the_old_cell_is_not_written(
    stepped: Runtime, tmp_path: Path, how: str, path: str
) -> None:
    host = _load(stepped, tmp_path, COUNTER, name="again")
    _emit(stepped, "go", 3)
    old = _cell(stepped, "again", "n")
    store = stepped.shared.namespace("again")
    store.remove("n") if how == "remove" else store.clear()
    _emit(stepped, "go")
    _emit(stepped, "op", 3)
    assert store.int("n").get() == -2
    assert store.dump() == {"n": -2}
    if path == "native":
        assert type(old) is _FAST_INT.IntCell  # type: ignore[union-attr]
        assert (old.value, old.alive) == (3, False)
        assert _cell(stepped, "again", "n") is not old
    else:
        assert old == 3
    assert host.errors == []


def test_a_closed_store_raises_closed_error_from_lua(stepped: Runtime, tmp_path: Path) -> None:
    host = _load(stepped, tmp_path, COUNTER, name="late")
    _emit(stepped, "go", 3)
    _emit(stepped, "op", 2)
    stepped.shared.close()
    _emit(stepped, "go")
    _emit(stepped, "op")
    assert host.errors == [
        "handler for 'go': late.lua:3: the shared store is closed",
        "handler for 'op': late.lua:7: the shared store is closed",
    ]
    with pytest.raises(ClosedError):
        stepped.shared.namespace("late").int("n").get()


def test_overflow_from_lua_raises_and_leaves_the_value(stepped: Runtime, tmp_path: Path) -> None:
    host = _load(stepped, tmp_path, COUNTER, name="big")
    _emit(stepped, "go", 2)
    _emit(stepped, "op", 2)  # both ops have the cell now
    store = stepped.shared.namespace("big")
    store.int("n").set(INT_MAX)
    _emit(stepped, "go")
    store.int("n").set(INT_MIN)
    _emit(stepped, "op")
    assert host.errors == [
        f"handler for 'go': big.lua:3: shared int 'n': increment(1) would leave the 64-bit "
        f"range [{INT_MIN}, {INT_MAX}] (value is {INT_MAX}); value unchanged",
        f"handler for 'op': big.lua:7: shared int 'n': decrement(1) would leave the 64-bit "
        f"range [{INT_MIN}, {INT_MAX}] (value is {INT_MIN}); value unchanged",
    ]
    assert store.int("n").get() == INT_MIN
    store.int("n").set(INT_MAX - 1)
    _emit(stepped, "go")  # in range again: the cached cell still works
    assert store.dump() == {"n": INT_MAX}


def test_dump_names_and_contains_show_cells_as_ints(stepped: Runtime, tmp_path: Path) -> None:
    _load(stepped, tmp_path, COUNTER, name="show")
    _emit(stepped, "go", 5)
    store = stepped.shared.namespace("show")
    assert store.dump() == {"n": 5}
    assert type(store.dump()["n"]) is int
    assert store.names() == ["n"]
    assert store.contains("n")
    assert stepped.shared.namespace("show").int("n").get() == 5


@needs_c
def test_the_common_path_takes_no_gil(stepped: Runtime, tmp_path: Path, path: str) -> None:
    """Once the check and the op have the key's cell, Lua does them on it
    without the GIL: the first call of each takes the GIL, the rest do not."""
    if path != "native":
        pytest.skip("the pure-Python path always takes the GIL")
    host = _load(stepped, tmp_path, COUNTER, name="nogil")
    _emit(stepped, "go", 50)
    cell = _cell(stepped, "nogil", "n")
    assert _FAST_INT is not None
    kinds = (_FAST_INT.IntOp, _FAST_INT.KindCheck)
    users = [o for o in gc.get_referrers(cell) if type(o) in kinds]
    counts = sorted((type(o).__name__, o.lua_calls_with_gil, o.lua_calls_without_gil)
                    for o in users)
    # the op: its first call makes the cell (and keeps it); the check (the
    # handle was made at load): the first call finds no key, the second
    # keeps the cell
    assert counts == [("IntOp", 1, 49), ("KindCheck", 2, 48)]
    assert cell.value == 50 and host.errors == []


@needs_c
def test_lua_increments_while_python_holds_the_gil(path: str) -> None:
    """A Lua loop on another thread keeps incrementing while this thread
    holds the GIL in a C loop that never lets it go: the increments do not
    need it."""
    if path != "native":
        pytest.skip("the pure-Python path always takes the GIL")
    import lupa.lua54 as lua

    store = SharedStore()
    counter, stop = store.int("n"), store.int("stop")
    op = counter.native_ops()["increment"]  # type: ignore[attr-defined]
    stop_read = stop.native_ops()["add"]  # type: ignore[attr-defined]  # add(0): the value
    stop.set(0)
    runtime = lua.LuaRuntime()
    state = int(runtime.execute('return string.format("%p", coroutine.running())'), 16)
    bind = native_quick_bind(lua, runtime, state)
    assert bind is not None
    loop = runtime.eval(
        "function(bind, op, a, stop, b) local q, s = bind(op, a), bind(stop, b)"
        " local n = 0 repeat q() n = n + 1 until s(0) ~= 0 or n >= 200000000 return n end"
    )
    quick, stop_quick = op.quick, stop_read.quick  # one bound method each: its id is bound
    worker = threading.Thread(target=loop, args=(bind, quick, id(quick), stop_quick,
                                                  id(stop_quick)))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while counter.get() < 1000 and time.monotonic() < deadline:
            pass  # the loop runs (on its cached cell)
        before = counter.get()
        sum(range(30_000_000))  # C code: holds the GIL throughout
        during = counter.get() - before
    finally:
        stop.set(1)
        worker.join(60)
    assert not worker.is_alive()
    assert during > 10_000, during
    assert before >= 1000 and op.lua_calls_with_gil <= 1


@needs_c
def test_cells_step_aside_for_other_values() -> None:
    """The cell's own operations: no change past 64 bits, on a dead cell or
    in a closed store; compare_and_set as the Python slow path uses it."""
    assert _FAST_INT is not None
    gate = _FAST_INT.StoreGate()
    cell = _FAST_INT.IntCell(INT_MAX - 1, gate)
    assert cell.add(1) == INT_MAX
    assert cell.add(1) is None and cell.add(2**64) is None and cell.add(1.0) is None
    assert cell.value == INT_MAX
    assert cell.compare_and_set(INT_MAX, 5) is True
    assert cell.compare_and_set(INT_MAX, 6) is False
    assert repr(cell) == "IntCell(5)"
    cell.kill()
    assert cell.add(1) is None and cell.value == 5 and repr(cell) == "IntCell(5, dead)"
    other = _FAST_INT.IntCell(0, gate)
    gate.close()
    assert other.add(1) is None and gate.closed is True
    with pytest.raises(OverflowError):
        _FAST_INT.IntCell(2**63, gate)
    with pytest.raises(TypeError):
        _FAST_INT.IntCell(1.0, gate)


def test_the_store_path_decides_the_stored_type(path: str) -> None:
    """Cells on the C path, plain ints on the pure-Python path; the same values."""
    store = SharedStore()
    store.int("n").increment(2)
    store.int("n").decrement(INT_MIN + 10)
    stored = store._backend._state.spaces[store._namespace]["n"]  # type: ignore[attr-defined]
    assert type(stored) is (int if path == "python" else _FAST_INT.IntCell)  # type: ignore[union-attr]
    assert store.dump() == {"n": 2 - (INT_MIN + 10)}


@needs_c
def test_only_quick_keeps_the_cell_and_only_for_ints(path: str) -> None:
    """``quick`` (the Lua state's entry) keeps the key's cell for the GIL-free
    path; a plain call (any thread) does not; a kind check keeps an int
    key's cell only."""
    if path != "native":
        pytest.skip("a pure-Python store has no cells")
    store = SharedStore()
    handle = store.int("n")
    op = handle.native_ops()["increment"]  # type: ignore[attr-defined]
    assert op() == 1 and op.cell is None
    assert op.quick() == 2 and op.cell is not None and op.cell.value == 2
    int_check = handle.native_check(lambda: None)  # type: ignore[attr-defined]
    assert int_check() is None and int_check.cell is None
    assert int_check.quick() is True and int_check.cell is op.cell
    store.float("x").set(1.0)
    float_check = store.float("x").native_check(lambda: None)  # type: ignore[attr-defined]
    assert float_check.quick() is True and float_check.cell is None
    kept = op.cell
    store.remove("n")
    assert kept.alive is False
    assert op.quick() == 1 and op.cell is not kept and op.cell.alive


def test_native_false_keeps_a_store_pure_python() -> None:
    """``SharedStore(native=False)`` / ``from_url(..., native=False)`` (what
    ``Runtime(native=False)`` opens): plain ints, whatever the C path."""
    for store in (SharedStore(native=False), SharedStore.from_url("memory://", native=False)):
        store.int("n").increment(4)
        assert type(store._backend._state.spaces[store._namespace]["n"]) is int  # type: ignore[attr-defined]
        assert store.int("n").native_ops() == {}  # type: ignore[attr-defined]
        assert store.dump() == {"n": 4}
