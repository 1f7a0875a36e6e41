"""Script lifecycle: styles, on_start/poll/on_stop, failures, statuses (SPEC §4)."""

from __future__ import annotations

import pytest

from moonbus.errors import ScriptError, ScriptSyntaxError


def test_global_style_runs_start_poll_stop_in_order(stepped):
    h = stepped.script(
        """
        function on_start() shared:string("trace"):append("start;") end
        function poll() shared:string("trace"):append("poll;") return 100 end
        function on_stop() shared:string("trace"):append("stop;") end
        """
    )
    h.start()
    stepped.advance(0.25)
    assert h.status == "running"
    h.stop()
    assert h.status == "stopped"
    trace = h.shared.string("trace").get()
    assert trace.startswith("start;poll;")
    assert trace.endswith("poll;stop;")
    assert trace.count("stop;") == 1
    assert h.polls == trace.count("poll;") >= 2


def test_table_style_methods_get_self(stepped):
    h = stepped.script(
        """
        local script = { count = 0 }
        function script:on_start() self.count = 10 end
        function script:poll() self.count = self.count + 1; shared:int("n"):set(self.count) end
        function script:on_stop() shared:bool("stopped"):set(self.count > 10) end
        return script
        """
    )
    h.start()
    stepped.advance(0.35)
    h.stop()
    assert h.shared.int("n").get() >= 12
    assert h.shared.bool("stopped").get() is True


def test_on_start_false_aborts_the_start(stepped):
    h = stepped.script(
        """
        function on_start() return false end
        function poll() shared:int("polls"):increment() end
        function on_stop() shared:bool("stop_ran"):set(true) end
        """
    )
    h.start()
    stepped.advance(0.5)
    assert h.status == "stopped"
    assert h.shared.int("polls").get() == 0
    assert h.shared.bool("stop_ran").get() is False


def test_on_start_error_fails_the_start_with_file_and_line(stepped):
    h = stepped.script("function on_start()\n  error('no ore here')\nend\n", name="miner")
    h.start()
    stepped.advance(0.1)
    assert h.status == "failed"
    assert any("miner.lua:2: no ore here" in e for e in h.errors)


def test_poll_number_is_the_delay_in_ms(stepped):
    h = stepped.script("function poll() return 500 end")
    h.start()
    stepped.advance(2.0, step=0.01)
    assert 4 <= h.polls <= 5


def test_default_poll_delay_is_configurable(stepped):
    stepped.rt.settings.poll_delay = 0.25
    h = stepped.script("function poll() end")
    h.start()
    stepped.advance(1.0, step=0.01)
    assert 4 <= h.polls <= 5


def test_poll_errors_counted_then_script_fails_and_on_stop_runs(stepped):
    stepped.rt.settings.max_poll_failures = 3
    h = stepped.script(
        """
        function poll() error("broken poll") end
        function on_stop() shared:bool("stop_ran"):set(true) end
        """
    )
    h.start()
    stepped.advance(1.0)
    assert h.status == "failed"
    assert h.poll_errors == 3
    assert h.shared.bool("stop_ran").get() is True
    assert any("broken poll" in e for e in h.errors)
    assert any("consecutive poll failures" in e for e in h.errors)


def test_a_successful_poll_resets_the_failure_count(stepped):
    stepped.rt.settings.max_poll_failures = 2
    h = stepped.script(
        """
        local n = 0
        function poll() n = n + 1; if n % 2 == 0 then error("every other") end end
        """
    )
    h.start()
    stepped.advance(1.0)
    assert h.status == "running"
    assert h.poll_errors >= 3


def test_syntax_error_raises_at_start_with_file_line(stepped):
    h = stepped.script("function poll(\n  return 1\n", name="broken")
    with pytest.raises(ScriptSyntaxError) as info:
        h.start()
    assert info.value.where is not None and info.value.where.startswith("broken.lua:")
    assert h.status == "failed"


def test_top_level_runtime_error_fails_the_load(stepped):
    h = stepped.script("local x = nil\nlocal y = x.field\n", name="top")
    with pytest.raises(ScriptError, match=r"top\.lua:2"):
        h.start()


def test_lifecycle_time_limit_aborts_a_looping_poll(stepped):
    stepped.rt.settings.lifecycle_timeout = 0.05
    stepped.rt.settings.max_poll_failures = 1
    h = stepped.script("function poll() while true do end end")
    h.start()
    stepped.advance(0.1)
    assert h.status == "failed"
    assert any("time limit" in e for e in h.errors)


def test_restart_after_stop_keeps_shared_values(stepped):
    h = stepped.script("function on_start() shared:int('starts'):increment() end")
    h.start()
    stepped.advance(0.1)
    h.stop()
    h.start()
    stepped.advance(0.1)
    h.stop()
    assert h.shared.int("starts").get() == 2


def test_reload_swaps_source_and_keeps_shared(stepped, tmp_path):
    h = stepped.script("function on_start() shared:int('v'):set(1) end")
    h.start()
    stepped.advance(0.1)
    h.reload(text="function on_start() shared:int('v'):add(41) end")
    stepped.advance(0.1)
    assert h.status == "running"
    assert h.shared.int("v").get() == 42


def test_reload_with_syntax_error_keeps_the_old_script_running(stepped):
    h = stepped.script("function poll() end")
    h.start()
    stepped.advance(0.1)
    with pytest.raises(ScriptSyntaxError):
        h.reload(text="function poll( end")
    assert h.status == "running"


def test_names_are_made_unique(stepped, tmp_path):
    path = tmp_path / "same.lua"
    path.write_text("function poll() end")
    a = stepped.rt.load(path)
    b = stepped.rt.load(path)
    c = stepped.rt.load(path)
    assert [a.name, b.name, c.name] == ["same", "same#2", "same#3"]
    a.shared.int("x").set(1)
    assert b.shared.int("x").get() == 0  # each instance has its own namespace


def test_common_namespace_is_shared(stepped):
    a = stepped.script("function on_start() shared:int('n'):increment() end", name="a",
                       namespace="team")
    b = stepped.script("function on_start() shared:int('n'):increment() end", name="b",
                       namespace="team")
    a.start()
    b.start()
    stepped.advance(0.1)
    assert a.shared.int("n").get() == 2
    assert stepped.rt.shared.namespace("team").int("n").get() == 2
