"""Shared handles from Lua: the quick C calls (``_fastconvert.c``, the memory
backend's ``quick`` methods) take the plain case with no lupa call, and hand
everything else to the host function, so a script sees the same values and
the same errors on the C and the pure-Python paths (conftest runs each test
on both)."""

from __future__ import annotations

import pytest

from moonbus.shared import INT_MAX


def _handler(stepped, body: str, name: str = "counter"):  # type: ignore[no-untyped-def]
    h = stepped.script(f'events:on("go", function(e)\n{body}\nend)\n', name=name)
    h.start()
    return h


def test_int_operations_from_lua(stepped):
    h = _handler(stepped, """
      local c = shared:int("n")
      shared:int("ops"):set(c:increment() + c:increment(5) + c:add(10) + c:subtract(3)
                            + c:decrement() + c:decrement(2) + shared:int("n").increment(c))
      -- '.' calls with 7, or nothing, where the handle belongs: refused
      local dot = pcall(c.increment, 7) or pcall(shared:int("n").increment)
      shared:int("dot"):set(dot and 1 or 0)
    """)
    stepped.rt.bus.emit("go")
    store = h.shared
    assert store.int("n").get() == 11
    assert store.int("ops").get() == 1 + 6 + 16 + 13 + 12 + 10 + 11
    assert store.int("dot").get() == 0
    stepped.rt.bus.emit("go")
    assert store.int("n").get() == 22
    assert h.errors == []


def test_the_quick_calls_are_bound_on_the_c_path(stepped, delivery_path):
    h = _handler(stepped, 'shared:int("n"):increment()')
    stepped.rt.bus.emit("go")
    bound = [e.engine.quick_bind for e in _engines(h)]
    assert bound and all((b is not None) == (delivery_path == "native") for b in bound)
    assert h.shared.int("n").get() == 1


def _engines(h):  # type: ignore[no-untyped-def]
    return [e for e in vars(h).values() if type(e).__name__ == "ScriptEngine"]


@pytest.mark.parametrize(("call", "error"), [
    ("c:increment(1.5)", "shared int 'n': increment needs an integer, got number 1.5"),
    ("c:add(true)", "shared int 'n': add needs an integer, got boolean True"),
    ("c:add('1')", "shared int 'n': add needs an integer, got string '1'"),
    ("c:add(2^63)", "shared int 'n': add needs an integer, got number 9.223372036854776e+18"),
    ("c:add(1, 2)", None),  # extra arguments: the Python method's own TypeError
])
def test_operand_errors_are_the_python_methods(stepped, call, error):
    h = _handler(stepped, f'local c = shared:int("n")\n{call}', name="ops")
    stepped.rt.bus.emit("go")
    assert len(h.errors) == 1
    assert h.errors[0].startswith("handler for 'go': ops.lua:3: ")
    if error is not None:
        assert h.errors[0].endswith(error)
    assert h.shared.int("n").get() == 0


def test_overflow_leaves_the_value_and_names_it(stepped):
    h = _handler(stepped, 'shared:int("n"):increment()', name="big")
    h.shared.int("n").set(INT_MAX)
    stepped.rt.bus.emit("go")
    assert h.errors == [
        f"handler for 'go': big.lua:2: shared int 'n': increment(1) would leave the 64-bit "
        f"range [{-INT_MAX - 1}, {INT_MAX}] (value is {INT_MAX}); value unchanged"
    ]
    assert h.shared.int("n").get() == INT_MAX


def test_a_kind_change_under_a_cached_handle(stepped):
    """The cached handle's kind check (at ``shared:int``) and its operation
    both refuse a key that now holds another kind, naming key and kinds."""
    h = stepped.script(
        'events:on("go", function(e)\n'
        '  shared:int("n"):increment()\n'
        'end)\n'
        'local kept = shared:int("n")\n'
        'events:on("op", function(e)\n'
        '  kept:increment()\n'
        'end)\n',
        name="kinds",
    )
    h.start()
    stepped.rt.bus.emit("go")
    assert h.shared.int("n").get() == 1
    h.shared.remove("n")
    h.shared.string("n").set("text")
    stepped.rt.bus.emit("go")
    stepped.rt.bus.emit("op")
    assert h.errors == [
        "handler for 'go': kinds.lua:2: shared key 'n' holds a string, not an int",
        "handler for 'op': kinds.lua:6: shared key 'n' holds a string, not an int",
    ]
    assert h.shared.string("n").get() == "text"
    h.shared.remove("n")
    stepped.rt.bus.emit("go")  # free again: the cached handle works again
    assert h.shared.int("n").get() == 1


def test_a_closed_store_refuses_from_lua(stepped):
    h = _handler(stepped, 'shared:int("n"):increment()', name="late")
    stepped.rt.bus.emit("go")
    stepped.rt.shared.close()  # the runtime's store (the script's is a view of it)
    stepped.rt.bus.emit("go")
    assert h.errors == ["handler for 'go': late.lua:2: the shared store is closed"]


def test_the_same_name_again_still_runs_the_kind_check(stepped):
    """``shared:int(name)`` with the name of the call before (the C closure's
    last name, kept in its upvalues) still checks the key's kind on every
    call: a lookup alone, with no operation after it, refuses a key that
    now holds another kind, and works again once the key is free."""
    h = stepped.script(
        'local refused = 0\n'
        'events:on("look", function(e)\n'
        '  if not pcall(shared.int, shared, "n") then refused = refused + 1 end\n'
        'end)\n'
        'events:on("report", function(e)\n'
        '  shared:string("refused"):set(tostring(refused))\n'
        'end)\n',
        name="look",
    )
    h.start()

    def refused() -> str:
        stepped.rt.bus.emit("report")
        return h.shared.string("refused").get()

    for _ in range(3):  # first use, then the cache, then the last name
        stepped.rt.bus.emit("look")
    assert refused() == "0"
    h.shared.remove("n")
    h.shared.string("n").set("text")
    stepped.rt.bus.emit("look")
    stepped.rt.bus.emit("look")
    assert refused() == "2"
    h.shared.remove("n")
    stepped.rt.bus.emit("look")
    assert refused() == "2"
    assert h.shared.int("n").get() == 0
    assert h.errors == []


def test_names_taking_turns_each_get_their_own_handle(stepped):
    """Two names asked for in turn (each call replaces the C closure's last
    name) and handles of several kinds: every call gets its own name's
    handle, whichever name came before."""
    h = _handler(stepped, """
      for i = 1, 3 do
        shared:int("a"):increment()
        shared:int("b"):add(10)
        shared:int("a"):add(100)
        shared:int("b"):increment()
        shared:float("f"):set(shared:float("f"):get() + 0.5)
        shared:int("a"):increment()
      end
      shared:string("s"):set(tostring(shared:int("a")) .. "/" .. tostring(shared:int("b")))
    """, name="turns")
    stepped.rt.bus.emit("go")
    stepped.rt.bus.emit("go")
    store = h.shared
    assert h.errors == []
    assert store.int("a").get() == 2 * 3 * 102
    assert store.int("b").get() == 2 * 3 * 11
    assert store.float("f").get() == 3.0
    assert store.string("s").get() == "shared int a/shared int b"


def test_the_same_name_again_sees_a_closed_store(stepped):
    """The last name's check in place (its cell test) fails once the store
    is closed, and the check's own path raises the store's error."""
    h = _handler(stepped, 'shared:int("n"):increment()', name="shut")
    for _ in range(3):  # first use, then the cache, then the last name
        stepped.rt.bus.emit("go")
    assert h.shared.int("n").get() == 3
    stepped.rt.shared.close()
    stepped.rt.bus.emit("go")
    assert h.errors == ["handler for 'go': shut.lua:2: the shared store is closed"]


def test_a_long_name_again_is_the_same_name(stepped):
    """A long name (Lua does not intern strings over 40 bytes: two equal ones
    are different objects) made anew on every call still finds its handle,
    and a long name that differs in its last byte gets its own."""
    long = "k" * 200
    h = _handler(stepped, """
      shared:int(string.rep("k", 200)):increment()
      shared:int(string.rep("k", 199) .. "j"):add(10)
      shared:int(string.rep("k", 200)):increment()
    """, name="long")
    for _ in range(3):
        stepped.rt.bus.emit("go")
    assert h.errors == []
    assert h.shared.int(long).get() == 6
    assert h.shared.int("k" * 199 + "j").get() == 30
