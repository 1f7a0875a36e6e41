"""The game-loop API of SPEC §10: script notifications, deduplicated handler
errors. Every test runs on the C and the Python delivery path (conftest)."""

from __future__ import annotations

import threading

import pytest

from moonbus.bus import Event
from moonbus.host.script_events import ScriptEvent
from moonbus.runtime import LogLine, Runtime

FAILING = """
local function inner(e) return e.missing.field end
events:on("ping", function(e) inner(e) end)
"""


def _events(rt: Runtime, pattern: str = "script:*") -> list[Event]:
    seen: list[Event] = []
    rt.bus.on(pattern, seen.append)
    return seen


# ------------------------------------------------------------ notifications
def test_the_host_hears_start_stop_and_failure_without_polling(stepped):
    heard: list[ScriptEvent] = []
    stepped.rt.add_script_listener(heard.append)
    on_bus = _events(stepped.rt)
    ok = stepped.script("function poll() end", name="ok")
    bad = stepped.script("function on_start() error('no map') end", name="bad")
    ok.start()
    bad.start()
    stepped.advance(0.1)
    ok.stop()
    stepped.rt.run_due()  # a stepped runtime tells its host inside run_due
    got = [(e.script, e.what, e.status) for e in heard]
    assert got == [("ok", "started", "running"), ("bad", "failed", "failed"),
                   ("ok", "stopped", "stopped")]
    failure = heard[1]
    assert failure.error is not None and "no map" in failure.error
    assert [(e.type, e.data["script"], e.source) for e in on_bus] == [
        ("script:started", "ok", "moonbus"), ("script:failed", "bad", "moonbus"),
        ("script:stopped", "ok", "moonbus")]
    with pytest.raises(AttributeError):
        failure.what = "x"  # type: ignore[misc]  # a frozen record


def test_a_load_error_and_the_constructor_listener(tmp_path):
    heard: list[ScriptEvent] = []
    with Runtime(threaded=False, on_script_event=heard.append) as rt:
        h = rt.load("broken.lua", text="error('top level')")
        with pytest.raises(Exception, match="top level"):
            h.start()
        rt.run_due()
        assert [(e.what, e.status) for e in heard] == [("failed", "failed")]
        assert "top level" in (heard[0].error or "")


def test_scripts_hear_about_other_scripts_with_a_wildcard(stepped):
    watcher = stepped.script(
        """
        events:on("script:*", function(e)
          shared:table("seen"):set(e.script .. "/" .. e.type, e.status)
        end)
        """, name="watcher")
    watcher.start()
    other = stepped.script(FAILING, name="other")
    other.start()
    stepped.rt.bus.emit("ping", {})
    stepped.rt.run_due()
    seen = watcher.shared.table("seen").to_table()
    assert seen == {"watcher/script:started": "running",  # its own start too
                    "other/script:started": "running",
                    "other/script:handler_error": "running"}


def test_a_listener_may_stop_scripts_and_its_errors_are_counted(stepped):
    h = stepped.script(FAILING, name="f")
    h.start()

    def stop_on_error(event: ScriptEvent) -> None:
        if event.what == "handler_error":
            stepped.rt.script(event.script).stop()  # no script lock is held here

    def broken(event: ScriptEvent) -> None:
        raise RuntimeError("listener bug")

    stepped.rt.add_script_listener(stop_on_error)
    remove = stepped.rt.add_script_listener(broken)
    stepped.rt.bus.emit("ping", {})
    stepped.rt.run_due()
    assert h.status == "stopped"
    stats = stepped.rt.script_event_statistics()
    assert stats.listener_errors >= 1
    remove()
    stepped.rt.run_due()
    assert stepped.rt.script_event_statistics().listener_errors == stats.listener_errors


def test_a_threaded_runtime_tells_the_listener_on_its_notifier_thread():
    got = threading.Event()
    names: list[str] = []

    def listener(event: ScriptEvent) -> None:
        names.append(threading.current_thread().name)
        if event.what == "stopped":
            got.set()

    with Runtime(threaded=True, workers=1, on_script_event=listener) as rt:
        h = rt.load("t.lua", text="function poll() return 10 end")
        h.start()
        h.stop(timeout=10)
        assert got.wait(10)
    assert set(names) == {"moonbus-script-events"}


# --------------------------------------------------- no loop through the bus
SELF_FEEDING = """
events:on("*", function(e) error("cannot handle " .. e.type .. " #" .. e.seq) end)
"""


@pytest.mark.parametrize("delivery", ["immediate", "deferred"])
def test_failing_wildcard_handlers_do_not_feed_themselves(tmp_path, delivery):
    with Runtime(threaded=False, event_delivery=delivery) as rt:
        on_bus = _events(rt, "script:handler_error")
        a = rt.load("a.lua", text=SELF_FEEDING)
        b = rt.load("b.lua", text=SELF_FEEDING)  # a and b would ping-pong
        companion = rt.load("c.lua", text='events:on("ping", function() '
                                          'shared:int("n"):increment() end)')
        for h in (a, b, companion):
            h.start()
        for _ in range(5):
            rt.bus.emit("ping", {})
            for _ in range(5):
                rt.run_due()
        assert companion.shared.int("n").get() == 5
        # One script:handler_error event per failing script: errors on the
        # notifications themselves are counted and logged, never re-emitted.
        assert sorted(e.data["script"] for e in on_bus) == ["a", "b"]
        assert a.handler_errors >= 5 and b.handler_errors >= 5
        assert rt.script_event_statistics().bus_events_held >= 1
        assert rt.bus.last_seq < 40


# -------------------------------------------------------- deduplicated log
def test_a_hundred_identical_errors_log_one_traceback_and_a_summary(stepped):
    h = stepped.script(FAILING, name="noisy")
    h.start()
    for _ in range(100):
        stepped.rt.bus.emit("ping", {})
    stepped.advance(1.2)  # the window passes: the repeats are summarised
    errors = [line.msg for line in stepped.logs if line.level == "error"]
    assert len(errors) == 2, errors
    first, summary = errors
    headline = "handler for 'ping': noisy.lua:2: attempt to index a nil value (field 'missing')"
    assert first.startswith(headline + "\nstack traceback:\n")
    assert first.count("attempt to index") == 1  # the headline once
    assert "\tnoisy.lua:2: in " in first and "\tnoisy.lua:3: in " in first
    for internal in ("<python>", "moonbus", "[C]", "tail calls"):
        assert internal not in first
    assert summary.startswith(headline + " ... repeated 99 more times in the last 1.")
    assert h.handler_errors == 100
    assert h.errors == [headline]


def test_a_different_error_summarises_the_previous_one_and_stop_flushes(stepped):
    h = stepped.script(
        'events:on("ping", function(e) if e.n < 3 then error("low") end error("high") end)',
        name="two")
    h.start()
    for n in range(6):
        stepped.rt.bus.emit("ping", {"n": n})
    h.stop()
    stepped.rt.run_due()  # the notifier writes a stopped script's last summaries
    errors = [line.msg.split("\n")[0] for line in stepped.logs if line.level == "error"]
    assert errors == [
        "handler for 'ping': two.lua:1: low",
        "handler for 'ping': two.lua:1: low ... repeated 2 more times in the last 0.0 s",
        "handler for 'ping': two.lua:1: high",
        "handler for 'ping': two.lua:1: high ... repeated 2 more times in the last 0.0 s",
    ]
    assert h.handler_errors == 6
    assert h.errors == ["handler for 'ping': two.lua:1: low",
                        "handler for 'ping': two.lua:1: high"]


def test_distinct_errors_are_bounded_per_script(stepped):
    stepped.rt.settings.max_distinct_errors = 4
    h = stepped.script('events:on("ping", function(e) error("n" .. e.n) end)', name="vary")
    h.start()
    for n in range(50):
        stepped.rt.bus.emit("ping", {"n": n})
    assert h.handler_errors == 50
    assert len(h._reporter._log._entries) == 4  # the oldest are forgotten
    assert stepped.rt.script_event_statistics().errors_forgotten == 50 - 4
    log_lines: list[LogLine] = [line for line in stepped.logs if line.level == "error"]
    assert len(log_lines) == 50  # all distinct: each is news


# ------------------------------------------------------------- ScriptHost.call
def test_the_host_asks_a_script_for_a_value(stepped):
    h = stepped.script(
        """
        local hits = 0
        events:on("hit", function(e) hits = hits + e.n end)
        function score(bonus) return hits + (bonus or 0) end
        function summary() return {hits = hits, tags = {"a", "b"}} end
        function pair() return 1, "two" end
        function nothing() end
        """, name="q")
    h.start()
    stepped.rt.bus.emit("hit", {"n": 4})
    assert h.call("score") == 4  # the event engine: what handlers changed
    assert h.call("score", 10) == 14
    assert h.call("summary") == {"hits": 4, "tags": ["a", "b"]}
    assert h.call("pair") == (1, "two")
    assert h.call("nothing") is None


def test_a_script_table_method_is_called_with_self(stepped):
    h = stepped.script(
        """
        local script = {level = 3}
        function script:level_of(x) return self.level * x end
        return script
        """, name="tbl")
    h.start()
    assert h.call("level_of", 2) == 6


def test_call_errors_name_the_script_and_the_function(stepped):
    from moonbus.errors import ScriptError, ScriptTimeout

    stepped.rt.settings.handler_timeout = 0.05
    h = stepped.script(
        """
        function broken() error("no such item") end
        function spin() while true do end end
        function fn() return function() end end
        """, name="errs")
    with pytest.raises(ScriptError, match=r"script 'errs': call broken\(\): the script is loaded"):
        h.call("broken")
    h.start()
    with pytest.raises(ScriptError, match=r"script 'errs': call broken\(\): errs.lua:2: no such"):
        h.call("broken")
    with pytest.raises(ScriptTimeout, match=r"script 'errs': call spin\(\).*time limit"):
        h.call("spin")
    with pytest.raises(ScriptError, match="has no function 'missing'"):
        h.call("missing")
    with pytest.raises(TypeError, match="call fn\\(\\): return value"):
        h.call("fn")
    with pytest.raises(TypeError, match=r"call broken\(\): args\[1\]: a Python object"):
        h.call("broken", 1, object())
    assert h.status == "running" and h.handler_errors == 0


def test_call_from_other_threads_is_serialised_with_delivery():
    with Runtime(threaded=True, workers=2) as rt:
        h = rt.load("count.lua", text="""
            local n = 0
            events:on("tick", function() n = n + 1 end)
            function bump() n = n + 1; return n end
        """)
        h.start()
        errors: list[BaseException] = []

        def caller() -> None:
            try:
                for _ in range(200):
                    h.call("bump")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(200):
            rt.bus.emit("tick", {}, tick=i)
        for t in threads:
            t.join(10)
        assert not errors
        assert h.call("bump") == 3 * 200 + 200 + 1  # no increment was lost


# ------------------------------------------------- field paths into Lua
def test_conversion_errors_name_the_field_path(stepped):
    import dataclasses

    from moonbus.errors import EventDataError
    from moonbus.lua.exposure import lua_api

    @dataclasses.dataclass(frozen=True)
    class Rect:
        x: int

    class Plain:
        pass

    @lua_api
    class Players:
        def local_player(self) -> dict[str, object]:
            return {"name": "ann", "pos": Rect(3)}

    stepped.rt.register_api("players", Players())
    h = stepped.script(
        """
        events:on("seen", function(e) end)
        function poll() players:local_player() end
        """, name="paths")
    h.start()
    stepped.rt.bus.emit("seen", {"monster": {"pos": Rect(1), "hp": 3}})
    stepped.rt.bus.emit("seen", {"big": [1, 2**70]})
    before = stepped.rt.bus.last_seq
    with pytest.raises(EventDataError, match=r"^data\.monster\.pos: a Python Plain is not event"):
        stepped.rt.bus.emit("seen", {"monster": {"pos": Plain()}})
    with pytest.raises(TypeError, match=r"^data\.items\[1\]: a Python Plain"):
        stepped.rt.bus.emit("seen", {"items": [1, Plain()]})
    assert stepped.rt.bus.last_seq == before  # nothing committed
    stepped.advance(0.2)
    text = "\n".join(h.errors)
    assert ("event 'seen': data.monster.pos: a Python Rect cannot be passed to Lua "
            "(decorate its class with @lua_api") in text
    assert "event 'seen': data.big[1]: the integer 1180591620717411303424 does not fit" in text
    # A script reads no Python names (SPEC §4b): the class becomes "a host value".
    assert "local_player(): return value.pos: a host value cannot be passed to Lua" in text


# ------------------------------------------------ undeclared event names
GAME_TYPES = {"GEM_COLLECTED": "gem_collected", "TICK": "tick"}


def _warnings(rt: Runtime) -> list[str]:
    return [line.msg for line in rt.recent_logs if line.level == "warn"]


def test_an_undeclared_event_name_is_warned_once_with_a_suggestion():
    with Runtime(threaded=False, event_types=GAME_TYPES) as rt:
        emitter = rt.load("emitter.lua", text='function poll() events:emit("mined", {}) end')
        h = rt.load("gems.lua", text="""
local total = 0
events:on("gem_colected", function() end)
events:once("gem_colected", function() end)
events:on("gem_collected", function() end)
events:on("player:*", function() end)
events:on("*", function() end)
events:on("script:failed", function() end)
events:on("mined", function() end)
events:on(events.EventType.TICK, function() end)
function on_start() events:on("late_typo", function() end) end
""")
        h.start()
        emitter.start()
        rt.run_due()
        warnings = _warnings(rt)
        assert warnings == [
            "events:on('gem_colected') at gems.lua:3: no one declared this event name, so the "
            "handler never runs; did you mean 'gem_collected'?",
            "events:on('late_typo') at gems.lua:11: no one declared this event name, so the "
            "handler never runs",
        ]
        assert [line.script for line in rt.recent_logs if line.level == "warn"] == ["gems"] * 2
        assert rt.script_event_statistics().undeclared_event_names == 2


def test_names_a_script_emits_at_run_time_are_declared_from_then_on():
    with Runtime(threaded=False, event_types=GAME_TYPES) as rt:
        a = rt.load("a.lua", text='local n = "cu" .. "stom"\nevents:emit(n, {})')
        a.start()
        b = rt.load("b.lua", text='events:on("custom", function() end)')
        b.start()
        assert _warnings(rt) == []


def test_without_declared_types_nothing_is_judged():
    with Runtime(threaded=False) as rt:
        h = rt.load("x.lua", text='events:on("whatever", function() end)')
        h.start()
        assert _warnings(rt) == []
        assert rt.script_event_statistics().undeclared_event_names == 0


def test_learned_names_are_bounded():
    with Runtime(threaded=False, event_types=GAME_TYPES) as rt:
        rt.settings.max_event_names = 5
        spam = rt.load("spam.lua", text='for i = 1, 50 do events:emit("n" .. i, {}) end')
        spam.start()
        h = rt.load("late.lua", text='events:on("n40", function() end)')
        h.start()
        warnings = _warnings(rt)
        assert len(warnings) == 1
        assert "(max_event_names): no more undeclared-name warnings" in warnings[0]
        assert rt.script_event_statistics().undeclared_event_names == 0


def test_a_threaded_listener_stops_the_failing_script_without_deadlock():
    stopped = threading.Event()

    def on_event(event: ScriptEvent) -> None:
        if event.what == "handler_error":
            rt.script(event.script).stop(timeout=10)  # outside every script lock
        elif event.what == "stopped":
            stopped.set()

    with Runtime(threaded=True, workers=2, on_script_event=on_event) as rt:
        h = rt.load("f.lua", text=FAILING + "\nfunction poll() return 5 end")
        h.start()
        rt.bus.emit("ping", {})
        assert stopped.wait(10)
        assert h.status == "stopped"


def test_a_threaded_runtime_summarises_repeats_once_a_window():
    from moonbus.host.context import HostSettings

    lines: list[str] = []
    summarised = threading.Event()

    def sink(line: LogLine) -> None:
        lines.append(line.msg)
        if "repeated 9 more times" in line.msg:
            summarised.set()

    with Runtime(threaded=True, workers=1,
                 settings=HostSettings(error_log_window=0.2)) as rt:
        rt.add_log_sink(sink)
        h = rt.load("noisy.lua", text=FAILING)
        h.start()
        for _ in range(10):
            rt.bus.emit("ping", {})
        assert summarised.wait(10), lines  # no further error is needed to say it
        assert h.status == "running" and h.handler_errors == 10
        assert sum("stack traceback" in line for line in lines) == 1


def test_notifications_reach_the_bus_only_when_someone_asks_for_them(stepped):
    everything: list[Event] = []
    stepped.rt.bus.on("*", everything.append)  # "*" alone does not ask for them
    h = stepped.script(FAILING, name="quiet")
    h.start()
    stepped.rt.bus.emit("ping", {})
    stepped.rt.run_due()
    assert [e.type for e in everything] == ["ping"]
    assert stepped.rt.bus.last_seq == 1  # the game's seqs are its own
    stepped.rt.bus.on("script:failed", lambda e: None)
    h.stop()
    stepped.rt.run_due()
    assert [e.type for e in everything] == ["ping"]  # a stop is not a failure
    bad = stepped.script("function on_start() error('x') end", name="bad")
    bad.start()
    stepped.rt.run_due()
    assert [e.type for e in everything] == ["ping", "script:failed"]
