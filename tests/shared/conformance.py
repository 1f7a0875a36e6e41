"""The shared-store conformance suite: SPEC §3, run against every backend.

Each test takes a ``store`` fixture: a fresh, empty ``SharedStore`` that owns its
backend, with the default limits (1 MiB strings, depth 32). A backend's test
module defines that fixture and imports these tests (``from
tests.shared.conformance import *``); pytest then runs them for that backend.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from moonbus.errors import ClosedError, SharedTypeError, SharedValueError
from moonbus.shared import INT_MAX, INT_MIN, SharedStore

MIB = 1 << 20

KIND_MAKERS: dict[str, Any] = {
    "int": lambda s, n: s.int(n).set(7),
    "float": lambda s, n: s.float(n).set(1.5),
    "string": lambda s, n: s.string(n).set("seven"),
    "bool": lambda s, n: s.bool(n).set(True),
    "table": lambda s, n: s.table(n).set("k", 7),
}


def _handle(store: SharedStore, kind: str, name: str) -> Any:
    return getattr(store, kind)(name)


# -- fresh values and existence ------------------------------------------------


def test_fresh_values(store: SharedStore) -> None:
    assert store.int("i").get() == 0
    assert type(store.int("i").get()) is int
    assert store.float("f").get() == 0.0
    assert type(store.float("f").get()) is float
    assert store.string("s").get() == ""
    assert store.bool("b").get() is False
    table = store.table("t")
    assert table.get("x") is None
    assert table.keys() == []
    assert table.to_table() == {}
    assert table.contains("x") is False


def test_handles_and_reads_do_not_create(store: SharedStore) -> None:
    for kind in KIND_MAKERS:
        handle = _handle(store, kind, f"n_{kind}")
        if kind == "table":
            handle.get("a")
            handle.keys()
            handle.to_table()
            handle.contains("a")
        else:
            handle.get()
        assert not store.contains(f"n_{kind}")
    assert store.names() == []
    assert store.dump() == {}


WRITES: list[tuple[str, str, tuple[Any, ...]]] = [
    ("int", "set", (0,)),
    ("int", "increment", ()),
    ("int", "decrement", ()),
    ("int", "add", (0,)),
    ("int", "subtract", (0,)),
    ("float", "set", (0.0,)),
    ("float", "add", (0.0,)),
    ("string", "set", ("",)),
    ("string", "append", ("",)),
    ("bool", "set", (False,)),
    ("bool", "toggle", ()),
    ("table", "set", ("k", 1)),
    ("table", "increment", ("k",)),
    ("table", "remove", ("k",)),
    ("table", "clear", ()),
]


@pytest.mark.parametrize(("kind", "method", "args"), WRITES, ids=lambda x: str(x))
def test_every_write_creates(
    store: SharedStore, kind: str, method: str, args: tuple[Any, ...]
) -> None:
    handle = _handle(store, kind, "w")
    getattr(handle, method)(*args)
    assert store.contains("w")
    assert store.names() == ["w"]
    assert "w" in store.dump()


# -- int -----------------------------------------------------------------------


def test_int_operations(store: SharedStore) -> None:
    hits = store.int("hits")
    assert hits.increment() == 1
    assert hits.increment(5) == 6
    assert hits.decrement() == 5
    assert hits.decrement(2) == 3
    assert hits.add(10) == 13
    assert hits.subtract(4) == 9
    assert hits.add(-20) == -11
    assert hits.increment(-1) == -12
    hits.set(42)
    assert hits.get() == 42
    assert store.int("hits").get() == 42


def test_int_exact_near_64_bit_limits(store: SharedStore) -> None:
    big = store.int("big")
    big.set(INT_MAX - 1)
    assert big.increment() == INT_MAX
    assert big.get() == INT_MAX
    assert big.subtract(2**62) == INT_MAX - 2**62
    big.set(INT_MIN + 1)
    assert big.decrement() == INT_MIN
    assert big.get() == INT_MIN
    big.set(2**53 + 1)
    assert big.increment() == 2**53 + 2
    assert big.get() == 2**53 + 2


@pytest.mark.parametrize(
    ("start", "method", "n"),
    [
        (INT_MAX, "increment", 1),
        (INT_MAX, "add", 1),
        (INT_MAX, "subtract", -1),
        (INT_MIN, "decrement", 1),
        (INT_MIN, "add", -1),
        (INT_MIN, "subtract", 1),
        (0, "subtract", INT_MIN),
        (1, "add", INT_MAX),
        (0, "add", 2**64),
        (0, "decrement", 2**70),
        (-1, "add", INT_MIN),
    ],
)
def test_int_overflow_is_an_error_and_changes_nothing(
    store: SharedStore, start: int, method: str, n: int
) -> None:
    counter = store.int("c")
    counter.set(start)
    with pytest.raises(SharedValueError, match="'c'"):
        getattr(counter, method)(n)
    assert counter.get() == start


def test_int_result_in_range_with_extreme_operand(store: SharedStore) -> None:
    counter = store.int("c")
    counter.set(-5)
    assert counter.subtract(INT_MIN) == INT_MAX - 4
    counter.set(5)
    assert counter.add(INT_MIN - 3) == INT_MIN + 2
    counter.set(-1)
    assert counter.decrement(INT_MIN) == INT_MAX


def test_int_overflow_on_fresh_name_creates_nothing(store: SharedStore) -> None:
    with pytest.raises(SharedValueError):
        store.int("fresh").subtract(INT_MIN)
    assert not store.contains("fresh")


@pytest.mark.parametrize("bad", [True, 1.0, 2.5, "1", None, [1]])
@pytest.mark.parametrize("method", ["set", "increment", "decrement", "add", "subtract"])
def test_int_rejects_non_integers(store: SharedStore, method: str, bad: object) -> None:
    counter = store.int("score")
    counter.set(3)
    with pytest.raises(SharedValueError, match=r"'score'.*" + type(bad).__name__):
        getattr(counter, method)(bad)
    assert counter.get() == 3


@pytest.mark.parametrize("bad", [2**63, INT_MIN - 1])
def test_int_set_out_of_range(store: SharedStore, bad: int) -> None:
    with pytest.raises(SharedValueError, match="64-bit"):
        store.int("x").set(bad)
    assert not store.contains("x")


# -- float ---------------------------------------------------------------------


def test_float_operations(store: SharedStore) -> None:
    f = store.float("speed")
    assert f.add(0.1) == 0.1
    assert f.add(0.2) == 0.1 + 0.2
    f.set(3)
    assert f.get() == 3.0
    assert type(f.get()) is float
    f.set(-0.0)
    assert math.copysign(1.0, f.get()) == -1.0
    f.set(1e308)
    with pytest.raises(SharedValueError, match="'speed'"):
        f.add(1e308)
    assert f.get() == 1e308
    f.set(5e-324)
    assert f.get() == 5e-324
    f.set(0.1)
    assert f.add(1e-17) == 0.1 + 1e-17


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1.0", None, 10**400])
def test_float_rejects(store: SharedStore, bad: object) -> None:
    f = store.float("f")
    f.set(2.5)
    with pytest.raises(SharedValueError, match="'f'"):
        f.set(bad)  # type: ignore[arg-type]
    with pytest.raises(SharedValueError, match="'f'"):
        f.add(bad)  # type: ignore[arg-type]
    assert f.get() == 2.5


# -- string --------------------------------------------------------------------


def test_string_operations(store: SharedStore) -> None:
    s = store.string("log")
    assert s.append("héllo") == "héllo"
    assert s.append(" wörld ✓ 🌙") == "héllo wörld ✓ 🌙"
    assert s.get() == "héllo wörld ✓ 🌙"
    s.set("")
    assert s.get() == ""
    s.set("a\x00b")
    assert s.get() == "a\x00b"


def test_string_size_limit_default_one_mib(store: SharedStore) -> None:
    s = store.string("big")
    s.set("a" * MIB)
    assert len(s.get()) == MIB
    with pytest.raises(SharedValueError, match="'big'"):
        s.append("b")
    assert len(s.get()) == MIB
    with pytest.raises(SharedValueError, match="'other'"):
        store.string("other").set("a" * (MIB + 1))
    assert not store.contains("other")


def test_string_limit_counts_utf8_bytes(store: SharedStore) -> None:
    s = store.string("u")
    s.set("é" * (MIB // 2))
    with pytest.raises(SharedValueError):
        s.append("é")
    with pytest.raises(SharedValueError):
        s.append("a")
    s.set("é" * (MIB // 2 - 1))
    assert s.append("a").endswith("a")


@pytest.mark.parametrize("bad", [1, None, b"bytes", "\ud800"])
def test_string_rejects(store: SharedStore, bad: object) -> None:
    s = store.string("s")
    s.set("keep")
    with pytest.raises(SharedValueError, match="'s'"):
        s.set(bad)  # type: ignore[arg-type]
    with pytest.raises(SharedValueError, match="'s'"):
        s.append(bad)  # type: ignore[arg-type]
    assert s.get() == "keep"


# -- bool ----------------------------------------------------------------------


def test_bool_operations(store: SharedStore) -> None:
    b = store.bool("on")
    assert b.toggle() is True
    assert b.toggle() is False
    b.set(True)
    assert b.get() is True


@pytest.mark.parametrize("bad", [1, 0, "true", None])
def test_bool_rejects(store: SharedStore, bad: object) -> None:
    with pytest.raises(SharedValueError, match="'on'"):
        store.bool("on").set(bad)  # type: ignore[arg-type]
    assert not store.contains("on")


# -- kinds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "requested"),
    [(a, b) for a in KIND_MAKERS for b in KIND_MAKERS if a != b],
)
def test_kind_conflict_names_key_and_both_kinds(
    store: SharedStore, existing: str, requested: str
) -> None:
    KIND_MAKERS[existing](store, "x")
    before = store.dump()
    with pytest.raises(SharedTypeError) as info:
        _handle(store, requested, "x")
    assert isinstance(info.value, TypeError)
    assert (info.value.key, info.value.existing, info.value.requested) == ("x", existing, requested)
    message = str(info.value)
    assert "'x'" in message and existing in message and requested in message
    assert store.dump() == before


READS_AND_WRITES: list[tuple[str, str, tuple[Any, ...]]] = [
    ("int", "get", ()),
    *[w for w in WRITES if w[0] == "int"],
    ("float", "get", ()),
    *[w for w in WRITES if w[0] == "float"],
    ("string", "get", ()),
    *[w for w in WRITES if w[0] == "string"],
    ("bool", "get", ()),
    *[w for w in WRITES if w[0] == "bool"],
    ("table", "get", ("k",)),
    ("table", "contains", ("k",)),
    ("table", "keys", ()),
    ("table", "to_table", ()),
    *[w for w in WRITES if w[0] == "table"],
]


@pytest.mark.parametrize(("kind", "method", "args"), READS_AND_WRITES, ids=lambda x: str(x))
def test_every_operation_rechecks_the_kind(
    store: SharedStore, kind: str, method: str, args: tuple[Any, ...]
) -> None:
    handle = _handle(store, kind, "x")
    other = "string" if kind != "string" else "int"
    store.remove("x")
    KIND_MAKERS[other](store, "x")
    before = store.dump()
    with pytest.raises(SharedTypeError) as info:
        getattr(handle, method)(*args)
    assert (info.value.key, info.value.existing, info.value.requested) == ("x", other, kind)
    assert store.dump() == before


def test_remove_then_recreate_with_another_kind(store: SharedStore) -> None:
    store.int("x").set(5)
    assert store.remove("x") is True
    assert store.remove("x") is False
    store.string("x").set("now a string")
    assert store.string("x").get() == "now a string"


def test_removed_or_cleared_int_starts_again_from_zero(store: SharedStore) -> None:
    """A handle kept across a remove (or clear) of its key sees a fresh key:
    the memory backend's old int cell is dead and a new one is made."""
    kept = store.int("n")
    kept.increment(5)
    assert store.remove("n") is True
    assert kept.get() == 0
    assert kept.increment() == 1
    assert store.int("n").get() == 1
    kept.add(9)
    store.clear()
    assert kept.decrement() == -1
    assert store.dump() == {"n": -1}


def test_int_values_show_as_ints(store: SharedStore) -> None:
    """dump, names and contains show a counter as the int it holds (the
    memory backend's int cells never show)."""
    store.int("n").increment(3)
    store.int("m").set(-2)
    store.table("t").increment("f", 4)
    dumped = store.dump()
    assert dumped == {"m": -2, "n": 3, "t": {"f": 4}}
    assert type(dumped["n"]) is int and type(dumped["m"]) is int
    assert store.names() == ["m", "n", "t"]
    assert store.contains("n") and not store.contains("x")
    for kind in ("float", "string", "bool", "table"):
        with pytest.raises(SharedTypeError, match=f"shared key 'n' holds an int, not an? {kind}"):
            getattr(store, kind)("n")


# -- table ---------------------------------------------------------------------


def test_table_values_roundtrip(store: SharedStore) -> None:
    t = store.table("inv")
    values: dict[str, Any] = {
        "int": -3,
        "big": INT_MAX,
        "small": INT_MIN,
        "float": 2.5,
        "whole_float": 1.0,
        "str": "ore ✓",
        "empty": "",
        "true": True,
        "false": False,
        "nested": {"a": {"b": {"c": [1, 2.0, "three", False]}}},
        "empty_table": {},
    }
    for key, value in values.items():
        t.set(key, value)
    assert t.get("int") == -3 and type(t.get("int")) is int
    assert t.get("big") == INT_MAX
    assert t.get("small") == INT_MIN
    assert type(t.get("whole_float")) is float
    assert t.get("true") is True and t.get("false") is False
    assert t.get("nested") == {"a": {"b": {"c": {"1": 1, "2": 2.0, "3": "three", "4": False}}}}
    assert type(t.get("nested")["a"]["b"]["c"]["2"]) is float
    assert t.get("empty_table") == {}
    assert t.keys() == sorted(values)
    snapshot = t.to_table()
    assert snapshot["str"] == "ore ✓"
    assert set(snapshot) == set(values)


def test_table_keys_int_become_strings_and_lists_are_lua_style(store: SharedStore) -> None:
    t = store.table("t")
    t.set(1, "one")
    assert t.get("1") == "one"
    assert t.get(1) == "one"
    assert t.contains(1) and t.contains("1")
    t.set("list", ["a", "b", ["c"]])
    assert t.get("list") == {"1": "a", "2": "b", "3": {"1": "c"}}
    t.set("tuple", ("x",))
    assert t.get("tuple") == {"1": "x"}
    t.set("mixed", {1: "a", "b": 2})
    assert t.get("mixed") == {"1": "a", "b": 2}
    assert t.keys() == ["1", "list", "mixed", "tuple"]


def test_table_copies_on_set_and_on_get(store: SharedStore) -> None:
    t = store.table("t")
    inner: dict[str, Any] = {"hp": 10, "tags": ["a"]}
    t.set("p", inner)
    inner["hp"] = 0
    inner["tags"].append("b")
    assert t.get("p") == {"hp": 10, "tags": {"1": "a"}}
    got = t.get("p")
    got["hp"] = 99
    got["tags"]["1"] = "z"
    assert t.get("p") == {"hp": 10, "tags": {"1": "a"}}
    snap = t.to_table()
    snap["p"]["hp"] = 1
    snap["new"] = 1
    assert t.to_table() == {"p": {"hp": 10, "tags": {"1": "a"}}}
    dumped = store.dump()
    dumped["t"]["p"]["hp"] = 5
    assert t.get("p") == {"hp": 10, "tags": {"1": "a"}}


def test_table_contains_remove_clear(store: SharedStore) -> None:
    t = store.table("t")
    t.set("a", 1)
    t.set("b", {"x": 1})
    assert t.contains("a")
    assert not t.contains("zz")
    assert t.remove("a") is True
    assert t.remove("a") is False
    assert t.get("a") is None
    t.set("b", None)
    assert not t.contains("b")
    t.set("c", 3)
    t.clear()
    assert t.keys() == []
    assert t.to_table() == {}
    assert store.contains("t")


def test_table_increment(store: SharedStore) -> None:
    t = store.table("ores")
    assert t.increment("iron") == 1
    assert t.increment("iron", 4) == 5
    assert t.increment(7, -2) == -2
    assert t.get("7") == -2
    t.set("big", INT_MAX)
    with pytest.raises(SharedValueError, match="ores"):
        t.increment("big")
    assert t.get("big") == INT_MAX
    t.set("small", INT_MIN + 1)
    assert t.increment("small", -1) == INT_MIN
    t.set("mid", 2**53 + 1)
    assert t.increment("mid") == 2**53 + 2
    t.set("nested", {"a": 1})
    t.set("name", "copper")
    t.set("ratio", 1.5)
    t.set("flag", True)
    for key, kind in (
        ("nested", "table"),
        ("name", "string"),
        ("ratio", "float"),
        ("flag", "bool"),
    ):
        with pytest.raises(SharedTypeError) as info:
            t.increment(key)
        assert info.value.existing == kind and info.value.requested == "int"
        assert "ores" in str(info.value) and key in str(info.value)
    assert t.get("nested") == {"a": 1}
    assert t.get("flag") is True
    with pytest.raises(SharedValueError):
        t.increment("iron", True)
    with pytest.raises(SharedValueError):
        t.increment("iron", 1.0)  # type: ignore[arg-type]
    assert t.get("iron") == 5


@pytest.mark.parametrize("bad_key", [1.5, True, None, ("a",), b"k"])
def test_table_rejects_bad_keys(store: SharedStore, bad_key: object) -> None:
    t = store.table("t")
    for call in (
        lambda: t.get(bad_key),  # type: ignore[arg-type]
        lambda: t.set(bad_key, 1),  # type: ignore[arg-type]
        lambda: t.contains(bad_key),  # type: ignore[arg-type]
        lambda: t.remove(bad_key),  # type: ignore[arg-type]
        lambda: t.increment(bad_key),  # type: ignore[arg-type]
    ):
        with pytest.raises(SharedValueError, match="'t'"):
            call()
    with pytest.raises(SharedValueError, match="'t'"):
        t.set("k", {bad_key: 1})
    assert not store.contains("t")


@pytest.mark.parametrize(
    "bad_value",
    [
        {1, 2},
        object(),
        {"a": None},
        [1, None],
        math.nan,
        {"x": math.inf},
        2**63,
        {"x": -(2**63) - 1},
        b"bytes",
        "\udc80",
        {1: "a", "1": "b"},
    ],
    ids=repr,
)
def test_table_rejects_bad_values(store: SharedStore, bad_value: object) -> None:
    t = store.table("t")
    t.set("keep", 1)
    with pytest.raises(SharedValueError, match="'t'"):
        t.set("k", bad_value)
    assert t.to_table() == {"keep": 1}


def test_table_rejects_cycles(store: SharedStore) -> None:
    t = store.table("t")
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    with pytest.raises(SharedValueError, match="cycle"):
        t.set("k", loop)
    lst: list[Any] = [1]
    lst.append({"back": lst})
    with pytest.raises(SharedValueError, match="cycle"):
        t.set("k", lst)
    assert not store.contains("t")
    shared_leaf = {"x": 1}
    t.set("diamond", {"a": shared_leaf, "b": shared_leaf})
    assert t.get("diamond") == {"a": {"x": 1}, "b": {"x": 1}}


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    return value


def test_table_depth_limit_counts_the_table_itself(store: SharedStore) -> None:
    t = store.table("t")
    t.set("ok", _nest(31))  # the shared table plus 31 nested tables = 32 levels
    assert t.get("ok") == _nest(31)
    with pytest.raises(SharedValueError, match="deeper"):
        t.set("deep", _nest(32))
    assert t.keys() == ["ok"]


# -- store level and namespaces -------------------------------------------------


def test_store_level_operations(store: SharedStore) -> None:
    store.int("b").set(2)
    store.string("a").set("x")
    store.table("c").set("k", [1])
    store.float("d").set(0.5)
    store.bool("e").set(True)
    assert store.names() == ["a", "b", "c", "d", "e"]
    assert store.dump() == {"a": "x", "b": 2, "c": {"k": {"1": 1}}, "d": 0.5, "e": True}
    assert list(store.dump()) == ["a", "b", "c", "d", "e"]
    assert store.contains("a")
    assert store.remove("a") is True
    assert not store.contains("a")
    store.clear()
    assert store.names() == []
    assert store.dump() == {}
    assert store.int("b").get() == 0


def test_namespaces_are_independent_views(store: SharedStore) -> None:
    mining = store.namespace("mining")
    chat = store.namespace("chat")
    assert mining.namespace_name == "mining"
    assert store.namespace_name == "global"
    mining.int("ore").increment(3)
    chat.int("ore").increment(1)
    chat.string("ore2").set("x")
    assert store.namespace("mining").int("ore").get() == 3
    assert chat.int("ore").get() == 1
    assert not store.contains("ore")
    mining.string("ore2").set("mine")  # same name, other namespace, other kind: fine
    chat.clear()
    assert chat.names() == []
    assert mining.dump() == {"ore": 3, "ore2": "mine"}
    weird = store.namespace("a:b")
    weird.int("c").set(1)
    assert store.namespace("a").names() == []
    assert store.namespace("a:b").dump() == {"c": 1}
    view = store.namespace("mining")
    view.close()  # a view does not own the backend
    assert mining.int("ore").get() == 3


def test_names_with_separators_and_unicode(store: SharedStore) -> None:
    for name in ("a:b", "a", "b:", ":", "ünï ✓", "*", "x y"):
        store.int(name).set(len(name))
    assert store.names() == sorted(["a:b", "a", "b:", ":", "ünï ✓", "*", "x y"])
    assert store.int("a:b").get() == 3
    assert store.namespace("a").names() == []


@pytest.mark.parametrize("bad", ["", 5, None, b"x", "\ud800"])
def test_bad_names(store: SharedStore, bad: object) -> None:
    with pytest.raises(SharedValueError, match="name"):
        store.int(bad)  # type: ignore[arg-type]
    with pytest.raises(SharedValueError, match="name"):
        store.contains(bad)  # type: ignore[arg-type]
    with pytest.raises(SharedValueError, match="name"):
        store.namespace(bad)  # type: ignore[arg-type]


def test_close_then_everything_raises(store: SharedStore) -> None:
    counter = store.int("c")
    table = store.table("t")
    counter.increment()
    with store as same:
        assert same is store
    with pytest.raises(ClosedError):
        counter.increment()
    with pytest.raises(ClosedError):
        counter.get()
    with pytest.raises(ClosedError):
        table.set("a", 1)
    with pytest.raises(ClosedError):
        store.int("c")
    with pytest.raises(ClosedError):
        store.names()
    with pytest.raises(ClosedError):
        store.namespace("x").dump()
    store.close()  # closing twice is harmless
