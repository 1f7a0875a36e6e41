"""Property and concurrency tests of the shared-store conformance suite.

A random sequence of operations must give the same results (values and error
types) as a plain-dict model of SPEC §3; concurrent operations from many
threads must never lose an update. Like ``conformance.py``, every test takes
a ``store`` fixture provided by the backend's test module.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moonbus.errors import MoonbusError, SharedTypeError, SharedValueError
from moonbus.shared import INT_MAX, INT_MIN, SharedStore


def fixture_settings(max_examples: int) -> settings:
    """Settings for a property test using the per-test ``store`` fixture (each
    example works in a fresh namespace of it, so sharing the fixture is safe)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- a model of SPEC §3 ----------------------------------------------------------

FRESH: dict[str, Any] = {"int": 0, "float": 0.0, "string": "", "bool": False}


def _lua_style(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _lua_style(v) for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): _lua_style(v) for i, v in enumerate(value, start=1)}
    return value


def _table_key(key: Any) -> str:
    if type(key) is str:
        return key
    if type(key) is int:
        return str(key)
    raise SharedValueError("bad key")


def _int_result(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise SharedValueError("overflow")
    return value


def _int_operand(n: Any) -> int:
    if type(n) is not int:
        raise SharedValueError("not an int")
    return n


def _float_operand(x: Any) -> float:
    if type(x) not in (int, float):
        raise SharedValueError("not a number")
    value = float(x)
    if not math.isfinite(value):
        raise SharedValueError("not finite")
    return value


class Model:
    """Name -> (kind, value), with the semantics SPEC §3 and handles.py describe."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[str, Any]] = {}

    def run(self, kind: str, name: str, method: str, args: tuple[Any, ...]) -> Any:
        if kind == "store":
            return self._store(name, method)
        existing = self.data.get(name)
        if existing is not None and existing[0] != kind:
            raise SharedTypeError(name, existing[0], kind)
        if kind == "table":
            return self._table(name, method, args)
        value = existing[1] if existing else FRESH[kind]
        if method == "get":
            return value
        result, new = self._scalar(kind, value, method, args)
        self.data[name] = (kind, new)
        return result

    def _scalar(self, kind: str, value: Any, method: str, args: tuple[Any, ...]) -> tuple[Any, Any]:
        if kind == "int":
            if method == "set":
                return None, _int_result(_int_operand(args[0]))
            n = _int_operand(args[0]) if args else 1
            sign = -1 if method in ("decrement", "subtract") else 1
            new = _int_result(value + sign * n)
            return new, new
        if kind == "float":
            x = _float_operand(args[0])
            if method == "set":
                return None, x
            new = value + x
            if not math.isfinite(new):
                raise SharedValueError("not finite")
            return new, new
        if kind == "string":
            if type(args[0]) is not str:
                raise SharedValueError("not a string")
            return (None, args[0]) if method == "set" else (value + args[0], value + args[0])
        if method == "set":
            if type(args[0]) is not bool:
                raise SharedValueError("not a bool")
            return None, args[0]
        return (not value), (not value)

    def _table(self, name: str, method: str, args: tuple[Any, ...]) -> Any:
        existing = self.data.get(name)
        table: dict[str, Any] = dict(existing[1]) if existing else {}
        key = _table_key(args[0]) if args else ""
        result: Any = None
        if method == "get":
            return table.get(key)
        if method == "contains":
            return key in table
        if method == "keys":
            return sorted(table)
        if method == "to_table":
            return table
        if (method == "set" and args[1] is None) or method == "remove":
            removed = table.pop(key, None) is not None
            result = removed if method == "remove" else None
        elif method == "set":
            table[key] = _lua_style(args[1])
        elif method == "clear":
            table = {}
        elif method == "increment":
            n = _int_operand(args[1]) if len(args) > 1 else 1
            current = table.get(key, 0)
            if type(current) is not int:
                raise SharedTypeError(f"{name}[{key!r}]", "?", "int")
            result = table[key] = _int_result(current + n)
        self.data[name] = ("table", table)
        return result

    def _store(self, name: str, method: str) -> Any:
        if method == "contains":
            return name in self.data
        if method == "remove":
            return self.data.pop(name, None) is not None
        if method == "names":
            return sorted(self.data)
        if method == "clear":
            self.data.clear()
            return None
        return {k: v for k, (_, v) in sorted(self.data.items())}


def _real(store: SharedStore, kind: str, name: str, method: str, args: tuple[Any, ...]) -> Any:
    if kind == "store":
        if method in ("names", "clear", "dump"):
            return getattr(store, method)()
        return getattr(store, method)(name)
    return getattr(getattr(store, kind)(name), method)(*args)


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", _typed(call()))
    except MoonbusError as exc:
        return ("error", type(exc).__name__)


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


# -- strategies --------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
INT_OPERANDS = st.one_of(
    st.integers(-3, 3),
    st.integers(INT_MIN, INT_MAX),
    st.sampled_from([INT_MAX, INT_MIN, 2**63, INT_MIN - 1, 2**64, True, 1.5]),
)
FLOAT_OPERANDS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-10, 10),
    st.sampled_from([math.inf, math.nan, 1e308, -1e308, True]),
)
LEAVES = st.one_of(
    st.integers(INT_MIN, INT_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.booleans(),
)
TABLE_VALUES = st.one_of(
    st.none(),
    st.recursive(
        LEAVES,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    ),
)
TABLE_KEYS = st.sampled_from(["x", "y", "1", 1, 2, 1.5])


def _op(kind: str, method: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.just(kind), NAMES, st.just(method), st.tuples(*args))


OPERATIONS = st.one_of(
    _op("int", "get"),
    _op("int", "set", INT_OPERANDS),
    _op("int", "increment"),
    *[_op("int", m, INT_OPERANDS) for m in ("increment", "decrement", "add", "subtract")],
    _op("float", "get"),
    _op("float", "set", FLOAT_OPERANDS),
    _op("float", "add", FLOAT_OPERANDS),
    _op("string", "get"),
    _op("string", "set", st.text(max_size=5)),
    _op("string", "append", st.text(max_size=5)),
    _op("bool", "get"),
    _op("bool", "set", st.one_of(st.booleans(), st.just(1))),
    _op("bool", "toggle"),
    *[_op("table", m, TABLE_KEYS) for m in ("get", "contains", "remove", "increment")],
    _op("table", "set", TABLE_KEYS, TABLE_VALUES),
    _op("table", "increment", TABLE_KEYS, INT_OPERANDS),
    *[_op("table", m) for m in ("clear", "keys", "to_table")],
    *[_op("store", m) for m in ("contains", "remove", "names", "dump", "clear")],
)


@fixture_settings(60)
@given(ops=st.lists(OPERATIONS, max_size=30))
def test_random_operations_match_the_model(store: SharedStore, ops: list[Any]) -> None:
    space = store.namespace(f"model-{uuid.uuid4().hex}")
    model = Model()
    try:
        for kind, name, method, args in ops:
            expected = _outcome(lambda: model.run(kind, name, method, args))  # noqa: B023
            actual = _outcome(lambda: _real(space, kind, name, method, args))  # noqa: B023
            assert actual == expected, (kind, name, method, args)
        assert _typed(space.dump()) == _typed(model._store("", "dump"))
    finally:
        space.clear()


@fixture_settings(40)
@given(value=TABLE_VALUES.filter(lambda v: v is not None))
def test_table_set_get_roundtrip(store: SharedStore, value: Any) -> None:
    table = store.namespace(f"rt-{uuid.uuid4().hex}").table("t")
    table.set("k", value)
    assert _typed(table.get("k")) == _typed(_lua_style(value))
    table.clear()


# -- threads -------------------------------------------------------------------------


def _in_threads(count: int, work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:  # surfaced below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@fixture_settings(5)
@given(threads=st.integers(2, 8), per_thread=st.integers(1, 300))
def test_threads_never_lose_an_increment(store: SharedStore, threads: int, per_thread: int) -> None:
    space = store.namespace(f"th-{uuid.uuid4().hex}")
    returned: list[list[int]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        counter = space.int("hits")
        out = returned[index]
        for _ in range(per_thread):
            out.append(counter.increment())

    _in_threads(threads, work)
    total = threads * per_thread
    assert space.int("hits").get() == total
    # Every increment saw a distinct value: the operations were linearizable.
    assert sorted(v for out in returned for v in out) == list(range(1, total + 1))
    space.clear()


def test_eight_threads_by_a_thousand(store: SharedStore) -> None:
    def work(_: int) -> None:
        counter = store.int("hits")
        for _ in range(1000):
            counter.increment()

    _in_threads(8, work)
    assert store.int("hits").get() == 8000


def test_concurrent_table_increments_and_sets(store: SharedStore) -> None:
    table = store.table("ores")

    def work(index: int) -> None:
        for i in range(300):
            table.increment("iron")
            table.increment("tin", 2)
            if index == 0 and i % 10 == 0:
                table.set(f"log{i}", {"i": i, "tags": ["a", "b"]})

    _in_threads(6, work)
    snapshot = table.to_table()
    assert snapshot["iron"] == 1800
    assert snapshot["tin"] == 3600
    assert snapshot["log290"] == {"i": 290, "tags": {"1": "a", "2": "b"}}


def test_concurrent_float_string_bool(store: SharedStore) -> None:
    def work(index: int) -> None:
        for _ in range(200):
            store.float("f").add(1.0)
            store.string("s").append(chr(ord("a") + index))
            store.bool("b").toggle()

    _in_threads(4, work)
    assert store.float("f").get() == 800.0
    assert Counter(store.string("s").get()) == {"a": 200, "b": 200, "c": 200, "d": 200}
    assert store.bool("b").get() is False


def test_kind_changes_race_with_operations(store: SharedStore) -> None:
    counter = store.int("x")
    stop = threading.Event()
    outcomes: Counter[str] = Counter()

    def flipper() -> None:
        try:
            for i in range(150):
                store.remove("x")
                if i % 2:
                    try:
                        store.string("x").set("text")
                    except SharedTypeError as exc:  # an increment re-created it first
                        assert (exc.existing, exc.requested) == ("int", "string")
                        outcomes["flip_lost"] += 1
        finally:
            stop.set()

    def incrementer() -> None:
        while not stop.is_set():
            try:
                assert type(counter.increment()) is int
                outcomes["ok"] += 1
            except SharedTypeError as exc:
                assert (exc.key, exc.existing, exc.requested) == ("x", "string", "int")
                outcomes["kind"] += 1
            time.sleep(0)  # let the flipper in: on a loaded box it can starve for minutes

    _in_threads(3, lambda i: flipper() if i == 0 else incrementer())
    final = store.dump().get("x")
    assert final is None or type(final) in (int, str)
