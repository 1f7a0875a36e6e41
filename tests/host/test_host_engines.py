"""The two engines and their delivery rules (SPEC §4 "Two engines per script")."""

from __future__ import annotations

import threading
import time

from moonbus.lua.exposure import lua_api


def test_load_time_handler_runs_immediately_in_the_event_engine(stepped):
    h = stepped.script(
        """
        events:on("game_action", function(e)
          shared:string("last"):set(e.interaction .. "@" .. e.tick)
        end)
        """
    )
    h.start()
    # No run_due: delivery happens inside emit, on the emitting thread.
    stepped.rt.bus.emit("game_action", {"interaction": "Mine Iron rocks"}, tick=7)
    assert h.shared.string("last").get() == "Mine Iron rocks@7"
    assert ("event", 1, "game_action") in h.listeners()


def test_no_double_delivery_of_top_level_handlers(stepped):
    h = stepped.script(
        """
        events:on("ping", function() shared:int("hits"):increment() end)
        function poll() end
        """
    )
    h.start()
    for _ in range(5):
        stepped.rt.bus.emit("ping")
        stepped.advance(0.05)
    assert h.shared.int("hits").get() == 5
    assert [row for row in h.listeners() if row[0] == "main"] == []


def test_handler_from_on_start_is_deferred_to_the_main_engine(stepped):
    h = stepped.script(
        """
        local seen = {}
        function on_start()
          local prefix = "got:"
          events:on("ping", function(e) seen[#seen + 1] = prefix .. e.n end)
        end
        function poll() shared:string("seen"):set(table.concat(seen, ",")) end
        """
    )
    h.start()
    stepped.advance(0.05)
    stepped.rt.bus.emit("ping", {"n": 1})
    stepped.rt.bus.emit("ping", {"n": 2})
    # Deferred: nothing ran yet in the main engine.
    assert h.shared.string("seen").get() == ""
    stepped.advance(0.3)
    assert h.shared.string("seen").get() == "got:1,got:2"
    assert ("main", 1, "ping") in h.listeners()


def test_locals_are_not_shared_between_engines(stepped):
    h = stepped.script(
        """
        local count = 0
        events:on("ping", function() count = count + 1; shared:int("event_count"):set(count) end)
        function poll() shared:int("main_count"):set(count) end
        """
    )
    h.start()
    stepped.advance(0.05)
    for _ in range(3):
        stepped.rt.bus.emit("ping")
    stepped.advance(0.2)
    assert h.shared.int("event_count").get() == 3
    assert h.shared.int("main_count").get() == 0


def test_deferred_events_before_stop_are_delivered_before_on_stop(stepped):
    h = stepped.script(
        """
        function on_start()
          events:on("ping", function(e) shared:string("log"):append("d" .. e.n .. ";") end)
        end
        function on_stop() shared:string("log"):append("stop;") end
        """
    )
    h.start()
    stepped.advance(0.05)
    for n in range(3):
        stepped.rt.bus.emit("ping", {"n": n})
    h.stop()
    assert h.shared.string("log").get() == "d0;d1;d2;stop;"
    stepped.rt.bus.emit("ping", {"n": 9})
    assert "d9" not in h.shared.string("log").get()


def test_deferred_handlers_run_while_the_script_sleeps(stepped):
    h = stepped.script(
        """
        function on_start()
          events:on("ping", function() shared:string("log"):append("event;") end)
        end
        function poll()
          shared:string("log"):append("sleep;")
          sleep(1000)
          shared:string("log"):append("woke;")
          return 10000
        end
        """
    )
    h.start()
    stepped.advance(0.2)
    stepped.rt.bus.emit("ping")
    stepped.advance(0.2)
    assert h.shared.string("log").get() == "sleep;event;"
    stepped.advance(1.0)
    assert h.shared.string("log").get() == "sleep;event;woke;"


def test_sleep_in_event_engine_is_an_error(stepped):
    h = stepped.script('events:on("ping", function() sleep(10) end)')
    h.start()
    stepped.rt.bus.emit("ping")
    assert h.handler_errors == 1
    assert any("not allowed in event handlers" in e for e in h.errors)


def test_sleep_wakes_at_once_when_stopped(threaded, tmp_path):
    path = tmp_path / "sleeper.lua"
    path.write_text(
        """
        function poll()
          shared:bool("sleeping"):set(true); sleep(60000); shared:bool("woke"):set(true)
        end
        function on_stop() shared:bool("stopped"):set(true) end
        """
    )
    h = threaded.load(path)
    h.start()
    deadline = time.monotonic() + 5
    while not h.shared.bool("sleeping").get() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    h.stop()
    assert time.monotonic() - started < 2.0
    assert h.status == "stopped"
    assert h.shared.bool("stopped").get() is True
    assert h.shared.bool("woke").get() is False


def test_emit_reaches_other_scripts_once_and_off(stepped):
    sender = stepped.script(
        'function on_start() events:emit("hello", {from_name = "sender"}) end', name="sender"
    )
    receiver = stepped.script(
        """
        local id = events:on("hello", function(e) shared:string("from"):append(e.from_name) end)
        events:once("hello", function() shared:int("once"):increment() end)
        local function counter() shared:int("off_by_fn"):increment() end
        events:on("hello", counter)
        events:off("hello", counter)
        shared:bool("removed_missing"):set(events:off(9999))
        """,
        name="receiver",
    )
    receiver.start()
    sender.start()
    stepped.advance(0.1)
    stepped.rt.bus.emit("hello", {"from_name": "host"})
    assert receiver.shared.string("from").get() == "senderhost"
    assert receiver.shared.int("once").get() == 1
    assert receiver.shared.int("off_by_fn").get() == 0
    assert receiver.shared.bool("removed_missing").get() is False
    emitted = stepped.rt.bus.log(types=["hello"])
    assert emitted[0].source == "script:sender"


def test_event_type_table_and_wildcards(stepped):
    h = stepped.script(
        """
        events:on("player:*", function(e) shared:string("got"):append(e.type .. ";") end)
        events:on("*", function() shared:int("all"):increment() end)
        shared:string("tick_name"):set(events.EventType.TICK .. "," .. events.EventType.LEVEL_UP)
        """
    )
    h.start()
    stepped.rt.bus.emit("player:moved")
    stepped.rt.bus.emit("other")
    assert h.shared.string("got").get() == "player:moved;"
    assert h.shared.int("all").get() == 2
    assert h.shared.string("tick_name").get() == "tick,level_up"


def test_handler_error_is_logged_with_traceback_and_counted(stepped):
    h = stepped.script(
        'events:on("ping", function(e)\n  if e.n == 1 then error("bad ping") end\n'
        '  shared:int("ok"):increment()\nend)\n',
        name="flaky",
    )
    h.start()
    for n in range(3):
        stepped.rt.bus.emit("ping", {"n": n})
    assert h.handler_errors == 1
    assert h.shared.int("ok").get() == 2
    errors = [line for line in stepped.logs if line.level == "error"]
    assert "flaky.lua:2: bad ping" in errors[0].msg
    assert "stack traceback" in errors[0].msg
    assert h.status == "running"


def test_slow_handler_is_aborted_and_other_scripts_still_run(stepped):
    stepped.rt.settings.handler_timeout = 0.05
    slow = stepped.script('events:on("ping", function() while true do end end)', name="slow")
    fast = stepped.script('events:on("ping", function() shared:int("n"):increment() end)',
                          name="fast")
    slow.start()
    fast.start()
    started = time.monotonic()
    stepped.rt.bus.emit("ping")
    stepped.rt.bus.emit("ping")
    assert time.monotonic() - started < 2.0
    assert slow.handler_errors == 2
    assert fast.shared.int("n").get() == 2
    assert any("time limit" in e for e in slow.errors)


def test_out_of_memory_in_a_handler_leaves_the_host_running(stepped):
    stepped.rt.settings.memory_limit = 8 * 1024 * 1024
    h = stepped.script(
        """
        events:on("grow", function() local t = {} for i = 1, 1e8 do t[i] = i end end)
        events:on("ping", function() shared:int("ok"):increment() end)
        """
    )
    h.start()
    stepped.rt.bus.emit("grow")
    stepped.rt.bus.emit("ping")
    assert h.handler_errors == 1
    assert h.shared.int("ok").get() == 1


def test_event_handlers_run_on_the_emitting_thread_in_threaded_mode(threaded, tmp_path):
    path = tmp_path / "t.lua"
    path.write_text('events:on("ping", function(e) shared:int("n"):add(e.n) end)')
    h = threaded.load(path)
    h.start()

    def emit_many() -> None:
        for _ in range(200):
            threaded.bus.emit("ping", {"n": 1})

    threads = [threading.Thread(target=emit_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.handler_errors == 0, h.errors
    assert h.shared.int("n").get() == 800


def test_logger_stats_options_time_and_string_helpers(stepped):
    h = stepped.script(
        """
        events:on("tick", function() logger:info("tick seen", time()) end)
        function on_start()
          logger:warn("ore is", options.ore)
          stats:set("ore", options.ore)
          stats:set("n", 3)
          local ok = pcall(function() options.ore = "gold" end)
          stats:set("options_writable", ok)
          local parts = ("a, b ,c"):split(",")
          stats:set("helpers", tostring(("Mine Iron"):contains("Iron")) .. parts[2]:trim()
            .. tostring(("abc"):starts_with("ab")) .. tostring(("abc"):ends_with("bc")))
        end
        """,
        options={"ore": "iron"},
    )
    h.start()
    stepped.rt.bus.emit("tick", {"tick": 5}, tick=5)
    stepped.advance(0.1)
    assert h.stats == {"ore": "iron", "n": 3, "options_writable": False,
                       "helpers": "truebtruetrue"}
    lines = [(line.engine, line.level, line.msg, line.tick) for line in stepped.logs]
    assert ("event", "info", "tick seen 5", 5) in lines
    assert ("main", "warn", "ore is iron", 5) in lines


def test_registered_game_api_is_callable_and_sealed(stepped):
    @lua_api
    class Greeter:
        def __init__(self) -> None:
            self.secret = "hidden"

        def greet(self, who: str) -> str:
            return f"hello {who}"

        def _private(self) -> str:
            return "no"

    stepped.rt.register_api("greeter", Greeter())
    h = stepped.script(
        """
        function on_start()
          stats:set("greet", greeter:greet("bob"))
          stats:set("secret", tostring(greeter.secret))
          stats:set("private", tostring(greeter._private))
          stats:set("class", tostring(greeter.__class__))
        end
        """
    )
    h.start()
    stepped.advance(0.1)
    assert h.stats == {"greet": "hello bob", "secret": "nil", "private": "nil", "class": "nil"}


def test_shared_kind_conflict_and_overflow_reach_lua_as_errors(stepped):
    h = stepped.script(
        """
        function on_start()
          shared:string("x"):set("text")
          local ok, err = pcall(function() return shared:int("x") end)
          stats:set("kind_error", tostring(err))
          shared:int("big"):set(math.maxinteger)
          local ok2, err2 = pcall(function() return shared:int("big"):increment() end)
          stats:set("overflow_ok", ok2)
          stats:set("big", shared:int("big"):get() == math.maxinteger)
          shared:table("t"):set("inv", {ore = 3, list = {1, 2}})
          stats:set("nested", shared:table("t"):get("inv").list[2])
          stats:set("tinc", shared:table("t"):increment("count", 5))
        end
        """
    )
    h.start()
    stepped.advance(0.1)
    assert "'x'" in h.stats["kind_error"] and "string" in h.stats["kind_error"]
    assert "int" in h.stats["kind_error"]
    assert h.stats["overflow_ok"] is False
    assert h.stats["big"] is True
    assert h.stats["nested"] == 2
    assert h.stats["tinc"] == 5


def test_a_script_cannot_resume_or_close_its_own_lifecycle_coroutine(stepped):
    h = stepped.script(
        """
        local poll_co
        function on_start()
          events:on("ping", function()
            local ok, err = pcall(coroutine.resume, poll_co)
            stats:set("resume", tostring(err))
            local ok2, err2 = pcall(coroutine.close, poll_co)
            stats:set("close", tostring(err2))
          end)
        end
        function poll()
          poll_co = coroutine.running()
          sleep(10000)
        end
        """
    )
    h.start()
    stepped.advance(0.2)
    stepped.rt.bus.emit("ping")
    stepped.advance(0.2)
    assert "own lifecycle coroutine" in h.stats["resume"]
    assert "own lifecycle coroutine" in h.stats["close"]
    assert h.status == "running" and h.poll_errors == 0
