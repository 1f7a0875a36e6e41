"""Hostile scripts against the quick C calls of shared handles: nothing a
script can reach binds a closure to another object, and what a script passes
(extreme integers, floats, NaN, strings, tables with metamethods, calls from
coroutines and from string.dump-ed code) gives the Python method's answer."""

from __future__ import annotations

from moonbus.shared import INT_MAX


def _run(stepped, body: str, name: str = "hostile"):  # type: ignore[no-untyped-def]
    h = stepped.script(f'events:on("go", function(e)\n{body}\nend)\n', name=name)
    h.start()
    stepped.rt.bus.emit("go")
    return h


def test_no_path_to_the_bind_function_or_a_closure(stepped):
    """The script sees neither ``quick_bind`` nor a quick closure: not in its
    globals, not through the handle's (protected) metatable, not through the
    debug library, not as an upvalue of a dumped and reloaded method."""
    h = _run(stepped, """
      local c = shared:int("n")
      local found = {}
      for k, v in pairs(_G) do
        if type(k) == "string" and k:find("quick") then found[#found + 1] = k end
      end
      shared:int("globals"):set(#found)
      shared:int("mt"):set(type(getmetatable(c)) == "string" and 1 or 0)
      shared:int("debug"):set((debug == nil or debug.getupvalue == nil) and 1 or 0)
      local ok = pcall(function()
        local f = load(string.dump(c.increment), "x", "b")
        return f
      end)
      shared:int("dump"):set(ok and 0 or 1)
      shared:int("rawget"):set(rawget(c, "increment") == nil and 1 or 0)
    """)
    assert h.errors == []
    store = h.shared
    assert store.int("globals").get() == 0
    assert store.int("mt").get() == 1
    assert store.int("debug").get() == 1
    assert store.int("dump").get() == 1
    assert store.int("rawget").get() == 1


def test_extreme_and_odd_operands(stepped):
    """Each call either does the plain case or raises the Python method's error;
    the value only changes by what succeeded."""
    h = _run(stepped, """
      local c = shared:int("n")
      local results = {}
      local calls = {
        function() return c:add(math.maxinteger) end,
        function() return c:add(1) end,                 -- overflow
        function() return c:subtract(math.mininteger) end,  -- overflow (negation)
        function() return c:decrement(math.mininteger) end,
        function() return c:add(0/0) end,
        function() return c:add(1/0) end,
        function() return c:add(-0.0) end,
        function() return c:add("5") end,
        function() return c:add({}) end,
        function() return c:add(setmetatable({}, {__index = function() return 1 end})) end,
        function() return c:add(nil) end,
        function() return c:increment(c) end,
        function() return c.increment() end,
        function() return c.add() end,
      }
      for i, f in ipairs(calls) do
        local ok, v = pcall(f)
        results[#results + 1] = ok and ("ok:" .. tostring(v)) or "err"
      end
      shared:string("results"):set(table.concat(results, ","))
    """)
    assert h.errors == []
    results = h.shared.string("results").get().split(",")
    assert results[0] == f"ok:{INT_MAX}"
    assert results[1:4] == ["err", "err", "err"]
    assert results[4:11] == ["err"] * 7
    assert results[11] == "err"
    assert h.shared.int("n").get() == INT_MAX


def test_calls_from_coroutines_and_wrapped_functions(stepped):
    h = _run(stepped, """
      local c = shared:int("n")
      local co = coroutine.wrap(function()
        for i = 1, 3 do c:increment(); coroutine.yield(c:add(0)) end
      end)
      co(); co(); co()
      local inc = c.increment
      local ok = pcall(inc, c, 10)
      -- a table forwarding to the handle is not the handle: refused
      local t = setmetatable({}, {__index = function(_, k) return c[k] end})
      shared:int("forwarded"):set(pcall(t.increment, t) and 1 or 0)
    """)
    assert h.errors == []
    assert h.shared.int("n").get() == 13
    assert h.shared.int("forwarded").get() == 0


def test_both_engines_of_one_script_lose_no_update(tmp_path):
    """The main engine (on_start, a worker thread) and the event engine (the
    event thread) run quick calls on one key at once: the store's lock
    linearizes them, nothing is lost (each side nets +1 per round)."""
    import time

    from moonbus.runtime import Runtime

    source = (
        'events:on("go", function(e) local c = shared:int("c") '
        'c:increment() c:add(2) c:subtract(1) c:decrement() end)\n'
        'function on_start()\n'
        '  local c = shared:int("c")\n'
        '  for i = 1, 20000 do\n'
        '    c:increment(); c:add(3); c:subtract(2); c:decrement()\n'
        '    if i % 500 == 0 then sleep(0) end\n'
        '  end\n'
        '  shared:int("done"):set(1)\n'
        'end\n'
    )
    path = tmp_path / "both.lua"
    path.write_text(source, encoding="utf-8")
    with Runtime(threaded=True, workers=2, event_delivery="deferred") as rt:
        host = rt.load(path)
        host.start()
        for _ in range(10000):
            rt.bus.emit("go")
        assert rt.flush_events(60)
        deadline = time.monotonic() + 60
        while host.shared.int("done").get() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.errors == []
        assert host.shared.int("c").get() == 20000 + 10000


def test_the_time_limit_ends_a_loop_of_quick_calls(stepped):
    """The hook fires between instructions, never inside the C call: a handler
    spinning on increments is stopped, and the store stays usable."""
    h = _run(stepped, 'local c = shared:int("n") while true do c:increment() end',
             name="spin")
    assert len(h.errors) == 1 and "time limit" in h.errors[0]
    reached = h.shared.int("n").get()
    assert reached > 0
    assert h.shared.int("n").increment() == reached + 1
