"""Attacks on the game-loop API (SPEC §10): a script that tries to turn the
host's notifications and logs against it. Each runs beside a well-behaved
companion and checks: emit returns within a bound, the companion kept
receiving events, the offender's errors were counted and bounded."""

from __future__ import annotations

import time

import pytest

from moonbus.runtime import Runtime

# Fails on every event, with a different text each time (the seq), so that
# deduplication alone cannot stop it, and listens to everything, so that it
# receives the notifications about its own errors.
SELF_FEEDER = 'events:on("*", function(e) error("refused #" .. e.seq) end)'
COMPANION = 'events:on("ping", function() shared:int("n"):increment() end)'


@pytest.mark.parametrize("delivery", ["immediate", "deferred"])
def test_a_self_feeding_wildcard_handler_cannot_flood_the_bus(delivery):
    with Runtime(threaded=True, workers=1, event_delivery=delivery) as rt:
        rt.bus.on("script:*", lambda e: None)  # the host asks for the notifications
        offender = rt.load("offender.lua", text=SELF_FEEDER)
        companion = rt.load("companion.lua", text=COMPANION)
        offender.start()
        companion.start()
        started = time.monotonic()
        for _ in range(200):
            rt.bus.emit("ping", {})
        assert time.monotonic() - started < 10
        assert rt.flush_events(10)
        time.sleep(0.3)  # the notifier and the event thread run on
        assert rt.flush_events(10)
        assert companion.shared.int("n").get() == 200
        emitted = [e for e in rt.bus.log() if e.type == "script:handler_error"]
        # One window (1 s) at most passed: one event, or two across a boundary.
        assert 1 <= len(emitted) <= 3, len(emitted)
        assert offender.handler_errors >= 200
        assert rt.script_event_statistics().bus_events_held >= 1
        assert len(offender.errors) <= rt.settings.max_errors_kept


def test_distinct_errors_do_not_grow_the_error_log_and_names_are_bounded():
    with Runtime(threaded=False, event_types={"PING": "ping"}) as rt:
        rt.settings.max_distinct_errors = 8
        rt.settings.max_event_names = 20
        offender = rt.load("offender.lua", text="""
            events:on("ping", function(e)
              events:emit("made_up_" .. e.seq, {})
              error("refused #" .. e.seq)
            end)
        """)
        companion = rt.load("companion.lua", text=COMPANION)
        offender.start()
        companion.start()
        for _ in range(100):
            rt.bus.emit("ping", {})
        rt.run_due()
        assert companion.shared.int("n").get() == 100
        assert offender.handler_errors == 100
        assert len(offender._reporter._log._entries) == 8
        late = rt.load("late.lua", text='events:on("made_up_99", function() end)')
        late.start()
        warnings = [line.msg for line in rt.recent_logs if line.level == "warn"]
        assert any("(max_event_names): no more undeclared-name warnings" in w
                   for w in warnings)
        assert not any("made_up_99" in w for w in warnings)
        stats = rt.script_event_statistics()
        assert stats.event_names_learned == 20 and stats.errors_forgotten == 100 - 8


def test_the_notification_backlog_is_bounded_while_no_one_dispatches():
    heard: list[object] = []
    with Runtime(threaded=False, on_script_event=heard.append) as rt:
        rt.settings.max_script_event_backlog = 10
        offender = rt.load("offender.lua", text='events:on("ping", function(e) '
                                                'error("refused #" .. e.seq) end)')
        companion = rt.load("companion.lua", text=COMPANION)
        offender.start()
        companion.start()
        for _ in range(100):  # a stepped game that has not called run_due yet
            rt.bus.emit("ping", {})
        stats = rt.script_event_statistics()
        assert stats.pending == 10 and stats.dropped == 100 + 2 - 10
        assert companion.shared.int("n").get() == 100
        offender.stop()
        rt.run_due()
        assert stats.dropped == rt.script_event_statistics().dropped  # stops always go
        whats = [getattr(e, "what", None) for e in heard]
        assert whats.count("stopped") == 1 and whats.count("started") == 2
