"""Structured answers: one command gives RCON/CLI their text and HTTP its data.

The text of every command is what it always was (tests/admin/test_admin_commands.py);
here: the data beside it, the kinds of error, and ``events.get``'s bounds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.admin.registry import Answer, CommandRegistry
from moonbus.errors import (
    AdminError,
    AdminNotFoundError,
    AdminStateError,
    AdminUnavailableError,
)
from moonbus.runtime import Runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(threaded=False, clock=lambda: 0.0,
                      events=f"sqlite:///{tmp_path / 'events.db'}")
    (tmp_path / "bot.lua").write_text(
        'events:on("ping", function(e) shared:int("n"):increment() stats.set("n", 1) end)\n'
        "function poll() return 10 end\n")
    runtime.load(tmp_path / "bot.lua").start()
    runtime.run_due()
    try:
        yield runtime
    finally:
        runtime.close()


def test_call_and_run_give_the_same_text(rt: Runtime) -> None:
    rt.bus.emit("ping", {}, tick=1)
    for line in ("scripts", "settings", "shared.dump bot", "events.get ping", "events",
                 "listeners", "help"):
        answer = rt.admin.call(line)
        assert isinstance(answer, Answer)
        assert answer.text == rt.admin.run(line)
    assert rt.admin.call("events").data is None  # text-only commands have no data


def test_data_of_the_commands_http_serves(rt: Runtime) -> None:
    rt.bus.emit("ping", {}, tick=3)
    rows = rt.admin.call("scripts").data["scripts"]
    assert rows[0]["name"] == "bot" and rows[0]["status"] == "running"
    assert rows[0]["stats"] == {"n": 1} and rows[0]["errors"] == []
    assert rt.admin.call("shared.dump bot").data == {"name": "bot", "shared": {"n": 1}}
    settings = rt.admin.call("settings").data["settings"]
    assert settings["max_poll_failures"] == rt.settings.max_poll_failures
    assert rt.admin.call("settings.set max_poll_failures 7").data == {
        "key": "max_poll_failures", "value": 7}
    page = rt.admin.call("events.get ping").data
    assert page["last_seq"] == page["events"][-1]["seq"]
    stop = rt.admin.call("script.stop bot")
    assert stop.data == {"name": "bot", "status": "stopped", "message": stop.text}
    assert not stop.unchanged
    assert rt.admin.call("script.stop bot").unchanged
    start = rt.admin.call("script.start bot")
    assert start.text == "started bot" and not start.unchanged
    rt.run_due()
    again = rt.admin.call("script.start bot")
    assert again.unchanged and again.text == "bot is already running"
    assert rt.admin.call("events.clear ping").data == {"cleared": 1, "type": "ping"}


def test_errors_say_their_kind(tmp_path: Path, rt: Runtime) -> None:
    with pytest.raises(AdminNotFoundError, match="no script named 'x'"):
        rt.admin.run("script.stop x")
    with pytest.raises(AdminNotFoundError):
        rt.admin.run("shared.dump x")
    with Runtime(threaded=False) as bare, pytest.raises(AdminUnavailableError):
        bare.admin.run("events.clear")
    assert issubclass(AdminStateError, AdminError)
    # the text front ends render every kind the same way as before
    assert rt.admin.answer("script.stop x") == "error: no script named 'x'"


def test_a_handler_may_answer_text_or_an_answer() -> None:
    reg = CommandRegistry()
    reg.register("plain", lambda args: "hi", usage="plain", help="text")
    reg.register("rich", lambda args: Answer("hi", data={"x": 1}), usage="rich", help="data")
    assert reg.call("plain") == Answer("hi")
    assert reg.run("rich") == "hi" and reg.call(["rich"]).data == {"x": 1}


def test_events_get_bounds(rt: Runtime) -> None:
    for tick in range(1, 7):
        rt.bus.emit("player:join", {"n": tick}, tick=tick)
    rt.bus.emit("chat", {}, tick=7)

    def ticks(line: str) -> list[int]:
        return [e["tick"] for e in json.loads(rt.admin.run(line))]

    assert ticks("events.get player:join 4") == [5, 6]  # the historical form
    assert ticks("events.get player:* after_tick=4") == [5, 6]
    assert ticks("events.get * limit=2") == [6, 7]  # newest, in seq order
    first = json.loads(rt.admin.run("events.get player:* after_seq=0 limit=2"))
    assert [e["tick"] for e in first] == [1, 2]
    assert ticks(f"events.get player:* after_seq={first[-1]['seq']} limit=3") == [3, 4, 5]
    assert ticks("events.get nothing:*") == []
    for line, message in (("events.get a limit=x", "limit must be an integer"),
                          ("events.get a 1 2", "usage: events.get"),
                          ("events.get a limit=1 limit=2", "limit is given twice"),
                          ("events.get a after=1", "unknown events.get bound 'after'"),
                          ("events.get a limit=-1", "limit must not be negative"),
                          ("events.get a after_seq=-1", "after_seq must not be negative"),
                          ("events.get a*b", "may not contain")):
        with pytest.raises(AdminError, match=message):
            rt.admin.run(line)


def test_events_get_without_a_store_reads_the_bus_log() -> None:
    with Runtime(threaded=False) as bare:
        for tick in range(1, 5):
            bare.bus.emit("player:join", {}, tick=tick)
        first = bare.admin.call("events.get player:* after_seq=0 limit=2").data
        assert [e["tick"] for e in first["events"]] == [1, 2]
        assert [e["tick"] for e in json.loads(bare.admin.run("events.get * 2 limit=1"))] == [4]
        assert bare.admin.call("events.get x:*").data == {"events": [], "last_seq": None}
