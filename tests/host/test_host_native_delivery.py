"""Event delivery into Lua on the C fast path (moonbus.lua._fastcall) and its
hand-offs to the Python path. Every test also runs on the Python path (see
conftest), so both must give the same observable results."""

from __future__ import annotations

import functools
import os
import threading
import time

import pytest

from moonbus.lua.exposure import lua_api
from moonbus.lua.fastcall import native_available


def test_the_fast_path_is_wired_when_built(stepped, delivery_path):
    h = stepped.script('events:on("ping", function() end)\nevents:once("ping", function() end)')
    h.start()
    subs = [s for s in stepped.rt.bus.subscriptions() if s.pattern == "ping"]
    assert len(subs) == 2
    plain, once = (s.handler for s in subs)
    assert isinstance(once, functools.partial)
    if delivery_path == "native":
        # partial(delivery, sub_id) as one C object (delivery.bind, issue 16)
        assert type(plain).__name__ == "BoundDelivery"
        delivery = plain.delivery
        assert type(delivery).__name__ == "Delivery" and plain.sub_id == 1
        assert delivery.c_deliver  # script_env.lua's deliver steps run in C (issue 16)
        with pytest.raises(TypeError):
            delivery(1)
        with pytest.raises(TypeError):
            delivery(1, None, extra=1)
        with pytest.raises(TypeError):
            plain()
        with pytest.raises(TypeError):
            plain(None, extra=1)
        with pytest.raises(AttributeError):  # not an event: the Python path rejects it
            delivery(1, object())
        with pytest.raises(AttributeError):
            plain(object())
    else:
        assert isinstance(plain, functools.partial)
        assert type(plain.func).__name__ != "Delivery"
    assert type(once.func).__name__ != "Delivery"  # once-handlers take the Python path


def test_ci_builds_the_c_delivery() -> None:
    if os.environ.get("CI") == "true" and not os.environ.get("MOONBUS_PURE_PYTHON"):
        assert native_available()


def test_payload_values_arrive_as_lua_values(stepped):
    h = stepped.script(
        """
        events:on("p", function(e)
          local parts = {}
          for _, k in ipairs({"s", "i", "f", "t", "b", "n", "big", "neg", "uni", "nul"}) do
            parts[#parts + 1] = k .. "=" .. tostring(e[k]) .. ":" .. tostring(math.type(e[k]))
              .. ":" .. type(e[k])
          end
          shared:string("out"):set(table.concat(parts, " "))
          shared:int("len"):set(#e.nul)
          shared:string("meta"):set(e.type .. "/" .. e.seq .. "/" .. tostring(e.tick))
        end)
        """
    )
    h.start()
    stepped.rt.bus.emit("p", {
        "s": "text", "i": 42, "f": 1.5, "t": True, "b": False, "n": None,
        "big": 2**63 - 1, "neg": -(2**63), "uni": "héllo ✓", "nul": "a\0b",
    })
    out = h.shared.string("out").get()
    assert "s=text:nil:string" in out
    assert "i=42:integer:number" in out
    assert "f=1.5:float:number" in out
    assert "t=true:nil:boolean" in out and "b=false:nil:boolean" in out
    assert "n=nil:nil:nil" in out
    assert f"big={2**63 - 1}:integer:number" in out
    assert f"neg={-(2**63)}:integer:number" in out
    assert "uni=héllo ✓:nil:string" in out
    assert h.shared.int("len").get() == 3
    assert h.shared.string("meta").get() == "p/1/nil"
    assert h.handler_errors == 0, h.errors


def test_payloads_the_fast_path_hands_to_python_arrive_the_same(stepped):
    h = stepped.script(
        """
        events:on("p", function(e)
          shared:string("out"):set(e.nested.x .. "|" .. #e.list .. "|" .. e.pi)
        end)
        """
    )
    h.start()
    stepped.rt.bus.emit("p", {"nested": {"x": "deep"}, "list": [1, 2, 3], "pi": 3.5})
    assert h.shared.string("out").get() == "deep|3|3.5", h.errors
    many = {f"k{i}": i for i in range(40)}  # more fields than the C path copies
    h2 = stepped.script(
        'events:on("many", function(e) shared:int("sum"):set(e.k0 + e.k39) end)', name="m"
    )
    h2.start()
    stepped.rt.bus.emit("many", many)
    assert h2.shared.int("sum").get() == 39


@pytest.mark.parametrize(
    ("data", "tick"),
    [({"huge": 2**70}, None), ({"deep": {"huge": -(2**64)}}, None), ({"n": 1}, 2**64)],
)
def test_an_integer_lua_cannot_hold_is_a_counted_handler_error(stepped, data, tick):
    h = stepped.script('events:on("p", function(e) shared:int("ran"):increment() end)')
    h.start()
    stepped.rt.bus.emit("p", data, tick=tick)
    stepped.rt.bus.emit("p", {"n": 1})
    assert h.shared.int("ran").get() == 1
    assert h.handler_errors == 1
    assert "does not fit in a Lua integer (64 bits)" in h.errors[0]


def test_data_fields_named_like_the_event_keep_the_data_value(stepped):
    h = stepped.script(
        'events:on("p", function(e) shared:string("o"):set(e.type .. e.seq .. e.tick) end)'
    )
    h.start()
    stepped.rt.bus.emit("p", {"type": "mine", "seq": "x", "tick": "y"}, tick=5)
    assert h.shared.string("o").get() == "minexy"


def test_errors_timeouts_and_memory_after_each_other_do_not_poison_the_engine(stepped):
    stepped.rt.settings.handler_timeout = 0.05
    stepped.rt.settings.memory_limit = 8 * 1024 * 1024
    h = stepped.script(
        """
        events:on("p", function(e)
          if e.mode == "error" then error("bad " .. e.n) end
          if e.mode == "spin" then while true do end end
          if e.mode == "pcall-spin" then
            for _ = 1, 3 do pcall(function() while true do end end) end
          end
          if e.mode == "grow" then local t = {} for i = 1, 1e8 do t[i] = i end end
          shared:int("ok"):increment()
        end)
        """,
        name="mixed",
    )
    h.start()
    for mode in ["ok", "error", "ok", "spin", "ok", "pcall-spin", "ok", "grow", "ok"]:
        stepped.rt.bus.emit("p", {"mode": mode, "n": 1})
    assert h.shared.int("ok").get() == 5
    assert h.handler_errors == 4
    text = "\n".join(h.errors)
    assert "mixed.lua:3: bad 1" in text
    assert text.count("time limit") == 1  # two timeouts, counted twice, kept once
    assert "out of memory" in text
    assert h.status == "running"


def test_a_handler_limit_change_applies_to_the_next_event(stepped):
    stepped.rt.settings.handler_timeout = None
    h = stepped.script(
        'events:on("p", function(e) local x = 0 for i = 1, e.n do x = x + i end '
        'shared:int("ok"):increment() end)'
    )
    h.start()
    stepped.rt.bus.emit("p", {"n": 3_000_000})
    assert h.shared.int("ok").get() == 1
    stepped.rt.settings.handler_timeout = 0.001
    stepped.rt.bus.emit("p", {"n": 10**12})
    assert h.handler_errors == 1 and "time limit" in h.errors[-1]


@lua_api
class _Api:
    def __init__(self) -> None:
        self.calls = 0

    def fail(self) -> None:
        self.calls += 1
        raise ValueError("host refused")

    def count(self) -> int:
        self.calls += 1
        return self.calls


def test_host_apis_and_nested_emits_inside_a_fast_delivery(stepped):
    api = _Api()
    stepped.rt.register_api("game", api)
    h = stepped.script(
        """
        events:on("outer", function(e)
          game:count()
          events:emit("inner", { n = e.n })
          local ok = pcall(function() game:fail() end)
          shared:bool("caught"):set(not ok)
        end)
        events:on("inner", function(e) shared:int("inner"):add(e.n) end)
        """
    )
    h.start()
    stepped.rt.bus.emit("outer", {"n": 4})
    stepped.rt.bus.emit("outer", {"n": 5})
    assert h.shared.int("inner").get() == 9
    assert h.shared.bool("caught").get() is True
    assert api.calls == 4
    assert h.handler_errors == 0, h.errors
    seqs = [e.seq for e in stepped.rt.bus.log(types=["outer", "inner"])]
    assert seqs == sorted(seqs)


def test_stopping_a_script_from_its_own_handler(stepped):
    h = stepped.script(
        """
        events:on("p", function(e) shared:int("n"):increment() end)
        """
    )
    h.start()
    stepped.rt.bus.on("p", lambda e: h.stop())
    stepped.rt.bus.emit("p")
    stepped.rt.bus.emit("p")
    assert h.shared.int("n").get() == 1
    assert h.status == "stopped"


def test_coroutines_inside_a_handler_and_a_timeout_inside_one(stepped):
    stepped.rt.settings.handler_timeout = 0.05
    h = stepped.script(
        """
        events:on("p", function(e)
          if e.spin then
            coroutine.wrap(function() while true do end end)()
          end
          local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
          local _, x = coroutine.resume(co, 1)
          local _, y = coroutine.resume(co, 10)
          shared:int("sum"):add(x + y)
        end)
        """
    )
    h.start()
    stepped.rt.bus.emit("p", {"spin": False})
    stepped.rt.bus.emit("p", {"spin": True})
    stepped.rt.bus.emit("p", {"spin": False})
    assert h.shared.int("sum").get() == 44
    assert h.handler_errors == 1 and "time limit" in h.errors[0]


def test_stopping_and_reloading_while_another_thread_emits(threaded, tmp_path):
    path = tmp_path / "t.lua"
    path.write_text('events:on("ping", function(e) shared:int("n"):add(e.n) end)')
    h = threaded.load(path)
    h.start()
    stop = threading.Event()
    sent = [0]

    def emit_many() -> None:
        while not stop.is_set():
            threaded.bus.emit("ping", {"n": 1})
            sent[0] += 1

    thread = threading.Thread(target=emit_many)
    thread.start()
    try:
        while sent[0] < 50:  # events are flowing before the first stop
            time.sleep(0.001)
        for _ in range(5):
            h.stop()
            h.start()
        h.reload()
    finally:
        stop.set()
        thread.join()
    assert h.status == "running"
    assert h.handler_errors == 0, h.errors
    assert 0 < h.shared.int("n").get() <= sent[0]


def test_runtime_native_false_keeps_the_python_paths(tmp_path):
    from moonbus.bus.core import PyEmitState
    from moonbus.runtime import Runtime

    path = tmp_path / "t.lua"
    path.write_text('events:on("ping", function(e) shared:int("n"):add(e.n) end)')
    with Runtime(threaded=False, native=False) as rt:
        assert isinstance(rt.bus._core, PyEmitState)
        h = rt.load(path)
        h.start()
        sub = next(s for s in rt.bus.subscriptions() if s.pattern == "ping")
        assert type(sub.handler.func).__name__ != "Delivery"  # type: ignore[attr-defined]
        rt.bus.emit("ping", {"n": 2})
        assert h.shared.int("n").get() == 2


@lua_api
class _Quitter:
    def __init__(self) -> None:
        self.host = None

    def quit(self) -> None:
        assert self.host is not None
        self.host.stop()


def test_a_handler_that_stops_its_own_script_through_a_host_api(stepped):
    api = _Quitter()
    stepped.rt.register_api("game", api)
    h = stepped.script(
        'events:on("p", function(e) shared:int("n"):increment() game:quit() '
        'shared:int("after"):increment() end)'
    )
    api.host = h
    h.start()
    stepped.rt.bus.emit("p")
    stepped.rt.bus.emit("p")
    assert h.status == "stopped"
    assert (h.shared.int("n").get(), h.shared.int("after").get()) == (1, 1)
    assert h.handler_errors == 0, h.errors


def test_an_abort_recorded_before_a_handler_starts_stops_it_as_it_starts(stepped):
    h = stepped.script('events:on("p", function(e) shared:int("ran"):increment() end)')
    h.start()
    engine = h._event.engine
    assert engine.abort(engine.next_token(), "cancel") is False  # recorded, not live yet
    stepped.rt.bus.emit("p")
    stepped.rt.bus.emit("p")
    assert h.shared.int("ran").get() == 1
    assert h.handler_errors == 1 and "cancelled" in h.errors[0]


def test_an_error_text_that_is_not_utf8_is_reported_not_lost(stepped):
    h = stepped.script(
        'events:on("p", function(e) error("bad \\255 byte") end)\n'
        'events:on("q", function(e) shared:int("ok"):increment() end)\n'
    )
    h.start()
    stepped.rt.bus.emit("p")
    stepped.rt.bus.emit("q")
    assert h.handler_errors == 1
    assert "s.lua:1: bad \ufffd byte" in h.errors[0]
    assert h.shared.int("ok").get() == 1


@lua_api
class _Shop:
    def buy(self, item: str) -> None:
        raise ValueError(f"no such item: {item!r}")


def test_errors_raised_by_python_name_the_script_line(stepped):
    stepped.rt.register_api("shop", _Shop())
    h = stepped.script(
        'events:on("a", function(e)\n'
        '  shared:string("k"):set("x")\n'
        '  shared:int("k"):increment()\n'
        'end)\n'
        'events:on("b", function(e)\n'
        '  shop:buy("axe")\n'
        'end)\n'
        'events:on("c", function(e) error("no position", 0) end)\n',
        name="shopper",
    )
    h.start()
    for name in "abc":
        stepped.rt.bus.emit(name)
    assert h.errors == [
        "handler for 'a': shopper.lua:3: shared key 'k' holds a string, not an int",
        "handler for 'b': shopper.lua:6: no such item: 'axe'",
        "handler for 'c': no position",  # error(msg, 0): the script chose no position
    ]
