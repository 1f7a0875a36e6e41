"""``moonbus check`` warns about event names no one declared (SPEC §10)."""

from __future__ import annotations

from typing import Any

from moonbus.cli.event_lint import event_uses, lint_events

TYPES = {"TICK": "tick", "GEM_COLLECTED": "gem_collected"}


def _messages(source: str, emitted: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    uses = event_uses(source)
    return [(f.line, f.message)
            for f in lint_events(uses, TYPES, set(emitted) | uses.emitted, "grid game")]


def test_declared_names_keys_patterns_and_emitted_names_are_quiet() -> None:
    source = (
        'events:on("gem_collected", f)\n'
        "events:once(events.EventType.TICK, f)\n"
        'events:on("*", f)\n'
        'events:on("player:*", f)\n'
        'events:emit("ping", {})\n'
        "events:on('ping', f)\n"
        'events:on "tick"\n'
        "events:on(name, f)\n"  # built at run time: not judged
        'events:on("gem\\95collected", f)\n'  # an escape: not judged
        'local t = { events = 1 }; t.events:on("nope", f)\n'
    )
    assert _messages(source) == []


def test_a_misspelt_name_and_an_unknown_key_are_warned_with_their_lines() -> None:
    source = 'local x = 1\nevents:on("gem_colected", f)\nevents:on(events.EventType.GEMS, f)\n'
    found = _messages(source)
    assert [line for line, _ in found] == [2, 3]
    assert "event 'gem_colected' is not declared by the grid game" in found[0][1]
    assert "events.EventType.GEMS is not a declared event type (nil)" in found[1][1]
    assert "GEM_COLLECTED, TICK" in found[1][1]


def test_a_name_another_checked_script_emits_counts_as_declared() -> None:
    assert _messages('events:on("ping", f)\n', emitted=("ping",)) == []
    assert len(_messages('events:on("ping", f)\n')) == 1


def test_check_uses_the_apps_event_types(moonbus: Any, lua: Any) -> None:
    listener = lua("listener.lua", 'events:on("level_up", function(e) end)\n'
                                   'events:on("ping", function(e) end)\n')
    sender = lua("sender.lua", 'function poll() events:emit("ping", {}) return 600 end\n')
    together = moonbus("check", "--strict", listener, sender)
    assert together.exit_code == 0, together.output
    alone = moonbus("check", "--strict", listener)
    assert alone.exit_code == 1
    assert f"{listener}:2: warning: event 'ping' is not declared by the demo world" in alone.stdout
    # level_up is declared by the demo world (the default app); a wrong key is not
    typo = lua("typo.lua", "events:on(events.EventType.LEVEL_UPP, function(e) end)\n")
    result = moonbus("check", typo)
    assert result.exit_code == 0  # warnings alone exit 0 without --strict
    assert "events.EventType.LEVEL_UPP is not a declared event type" in result.stdout
