"""Every JSON endpoint of the HTTP API (SPEC §11), each mapped onto one admin command."""

from __future__ import annotations

import json

from tests.http.helpers import Call

from moonbus.runtime import Runtime


def test_healthz_needs_no_token_and_says_nothing_secret(call: Call) -> None:
    r = call("GET", "/healthz", token=None)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_scripts_lists_status_stats_and_last_errors_in_load_order(rt: Runtime,
                                                                  call: Call) -> None:
    rt.bus.emit("ping", {})
    rt.bus.emit("boom", {"n": 7})
    r = call("GET", "/api/scripts")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    rows = r.json()["scripts"]
    assert [row["name"] for row in rows] == ["counter", "broken"]
    counter, broken = rows
    assert counter["status"] == "running"
    assert counter["stats"] == {"pings": 1}
    assert isinstance(counter["uptime"], float) and counter["polls"] >= 0
    assert broken["handler_errors"] == 1
    assert counter["handler_calls"] == 1 and broken["handler_calls"] == 1  # ping, boom
    assert any("kaboom 7" in e for e in broken["errors"])
    # the same figures RCON and the CLI print, from the same command
    text = rt.admin.run("scripts").splitlines()
    assert text[1].startswith("broken running") and "handler_errors=1" in text[1]


def test_stop_and_start_change_the_status_and_409_when_nothing_to_do(rt: Runtime,
                                                                     call: Call) -> None:
    r = call("POST", "/api/scripts/counter/stop")
    assert r.status_code == 200
    assert r.json() == {"name": "counter", "status": "stopped",
                        "message": "stopped counter (stopped)"}
    again = call("POST", "/api/scripts/counter/stop")
    assert again.status_code == 409
    assert again.json()["error"] == "stopped counter (stopped)"
    assert again.json()["status"] == "stopped"
    r = call("POST", "/api/scripts/counter/start")
    assert r.status_code == 200
    assert r.json()["message"] == "started counter"
    rt.run_due()
    assert rt.script("counter").status == "running"
    dup = call("POST", "/api/scripts/counter/start")
    assert dup.status_code == 409
    assert dup.json()["error"] == "counter is already running"


def test_reload_keeps_shared_values(rt: Runtime, call: Call) -> None:
    rt.bus.emit("ping", {})
    r = call("POST", "/api/scripts/counter/reload")
    assert r.status_code == 200
    assert r.json()["message"].startswith("reloaded counter")
    rt.run_due()
    shared = call("GET", "/api/scripts/counter/shared")
    assert shared.status_code == 200
    assert shared.json() == {"name": "counter", "shared": {"pings": 1}}


def test_reload_with_a_syntax_error_is_400_and_the_script_keeps_running(
        rt: Runtime, call: Call) -> None:
    host = rt.script("counter")
    host.source.path.write_text("this is not lua (")
    r = call("POST", "/api/scripts/counter/reload")
    assert r.status_code == 400
    assert "script.reload" in r.json()["error"]
    assert host.status == "running"


def test_unknown_script_is_404_for_every_script_endpoint(call: Call) -> None:
    for method, path in (("POST", "/api/scripts/nope/start"), ("POST", "/api/scripts/nope/stop"),
                         ("POST", "/api/scripts/nope/reload"),
                         ("GET", "/api/scripts/nope/shared")):
        r = call(method, path)
        assert r.status_code == 404, path
        assert r.json() == {"error": "no script named 'nope'"}


def test_names_are_only_names_never_command_lines(rt: Runtime, call: Call) -> None:
    rt.bus.emit("ping", {})
    r = call("POST", "/api/scripts/counter%20events.clear/stop")
    assert r.status_code == 404
    assert r.json()["error"] == "no script named 'counter events.clear'"
    assert rt.script("counter").status == "running"
    r = call("POST", "/api/scripts/counter;events.clear/stop")
    assert r.status_code == 404
    assert rt.event_store is not None and rt.event_store.summary() != {}


def test_events_query_filters_pages_and_limits(rt: Runtime, call: Call) -> None:
    for tick in range(1, 6):
        rt.bus.emit("player:join", {"n": tick}, tick=tick)
        rt.bus.emit("chat", {"n": tick}, tick=tick)
    rt.bus.emit("player:leave", {"n": 9}, tick=6)
    every = call("GET", "/api/events").json()
    assert [e["type"] for e in every["events"]][-3:] == ["player:join", "chat", "player:leave"]
    assert set(every["events"][0]) == {"seq", "tick", "type", "data", "ts", "source"}
    assert every["last_seq"] == every["events"][-1]["seq"]
    players = call("GET", "/api/events", params={"type": "player:*"}).json()["events"]
    assert [e["data"]["n"] for e in players] == [1, 2, 3, 4, 5, 9]
    after = call("GET", "/api/events", params={"type": "chat", "after_tick": 3}).json()
    assert [e["tick"] for e in after["events"]] == [4, 5]
    newest = call("GET", "/api/events", params={"type": "chat", "limit": 2}).json()
    assert [e["tick"] for e in newest["events"]] == [4, 5]
    first = call("GET", "/api/events", params={"type": "chat", "limit": 2, "after_seq": 0}).json()
    assert [e["tick"] for e in first["events"]] == [1, 2]
    page2 = call("GET", "/api/events", params={"type": "chat", "limit": 2,
                                                "after_seq": first["last_seq"]}).json()
    assert [e["tick"] for e in page2["events"]] == [3, 4]
    none = call("GET", "/api/events", params={"type": "nothing"}).json()
    assert none == {"events": [], "last_seq": None}
    # the same query over RCON/CLI: the text of the same command
    assert json.loads(rt.admin.run("events.get player:* after_seq=0 limit=2")) == players[:2]


def test_events_query_without_a_store_reads_the_bus_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.http.helpers import make_call

    from moonbus.http.app import build_app
    from moonbus.http.settings import HttpSettings

    with Runtime(threaded=False, clock=lambda: 0.0) as bare:
        for tick in range(1, 4):
            bare.bus.emit("player:join", {"n": tick}, tick=tick)
        bare.bus.emit("chat", {}, tick=4)
        call = make_call(build_app(bare, HttpSettings(token="abcdefgh")))
        got = call("GET", "/api/events", token="abcdefgh",
                   params={"type": "player:*", "after_tick": 1, "limit": 1}).json()
        assert [e["data"]["n"] for e in got["events"]] == [3]
        cleared = call("DELETE", "/api/events", token="abcdefgh")
        assert cleared.status_code == 503
        assert "no durable event store" in cleared.json()["error"]


def test_events_bad_parameters_are_400(call: Call) -> None:
    cases = [({"limit": "x"}, "limit must be an integer"),
             ({"limit": 1001}, "at most 1000"),
             ({"limit": -1}, "at least 0"),
             ({"after_seq": "1.5"}, "after_seq must be an integer"),
             ({"type": "a*b"}, "may not contain"),
             ({"type": "has space"}, "may not contain"),
             ({"after_sec": 3}, "unknown parameter(s): after_sec"),
             ({"format": "xml"}, "format must be json or ndjson")]
    for params, message in cases:
        r = call("GET", "/api/events", params=params)
        assert r.status_code == 400, params
        assert message in r.json()["error"], (params, r.json())


def test_events_ndjson_export_pages_through_everything(rt: Runtime, call: Call) -> None:
    for n in range(2500):
        rt.bus.emit("chat", {"n": n}, tick=n)
    rt.bus.emit("other", {})
    r = call("GET", "/api/events", params={"type": "chat", "format": "ndjson"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.text.splitlines()
    assert [json.loads(line)["data"]["n"] for line in lines] == list(range(2500))
    by_accept = call("GET", "/api/events", params={"type": "chat", "after_tick": 2490},
                     headers={"Accept": "application/x-ndjson"})
    assert [json.loads(x)["tick"] for x in by_accept.text.splitlines()] == list(
        range(2491, 2500))
    bad = call("GET", "/api/events", params={"type": "*x", "format": "ndjson"})
    assert bad.status_code == 400


def test_events_ndjson_export_stops_at_its_cap_and_counts_it(rt: Runtime) -> None:
    from tests.http.helpers import TOKEN, make_call

    from moonbus.http.app import build_app
    from moonbus.http.settings import HttpSettings

    app = build_app(rt, HttpSettings(token=TOKEN, max_export_events=30, max_events_limit=10,
                                     events_limit=10))
    for n in range(45):
        rt.bus.emit("chat", {"n": n})
    r = make_call(app)("GET", "/api/events", params={"type": "chat", "format": "ndjson"})
    assert len(r.text.splitlines()) == 30
    assert app.state.http_counters.snapshot().export_cut == 1
    over = make_call(app)("GET", "/api/events", params={"format": "ndjson", "limit": 31})
    assert over.status_code == 400


def test_delete_events_clears_all_or_one_type(rt: Runtime, call: Call) -> None:
    rt.bus.emit("chat", {})
    rt.bus.emit("chat", {})
    rt.bus.emit("ping", {})
    r = call("DELETE", "/api/events", params={"type": "chat"})
    assert r.status_code == 200
    assert r.json() == {"cleared": 2, "type": "chat"}
    assert call("DELETE", "/api/events").json()["cleared"] >= 1
    assert call("GET", "/api/events").json()["events"] == []
    assert call("DELETE", "/api/events", params={"typ": "x"}).status_code == 400


def test_settings_read_and_set(rt: Runtime, call: Call) -> None:
    r = call("GET", "/api/settings")
    assert r.status_code == 200
    settings = r.json()["settings"]
    assert settings["handler_timeout_ms"] == rt.settings.handler_timeout * 1000
    assert "retention_count" in settings and "log_appends" in settings
    r = call("PUT", "/api/settings/poll_delay_ms", json={"value": 25})
    assert r.status_code == 200
    assert r.json() == {"key": "poll_delay_ms", "value": 25.0}
    assert rt.settings.poll_delay == 0.025
    assert call("PUT", "/api/settings/log_appends", json={"value": True}).json()["value"] is True
    assert rt.store_settings.log_appends is True
    r = call("PUT", "/api/settings/retention_count", json={"value": None})
    assert r.json() == {"key": "retention_count", "value": None}
    # the text front end shows the same values
    assert "poll_delay_ms = 25.0" in rt.admin.run("settings")


def test_settings_bad_values_are_400_and_change_nothing(rt: Runtime, call: Call) -> None:
    before = rt.settings.poll_delay
    cases = [("/api/settings/poll_delay_ms", {"value": "soon"}, "must be a float"),
             ("/api/settings/poll_delay_ms", {"value": -5}, "finite number above"),
             ("/api/settings/poll_delay_ms", {"value": [1]}, '"value" must be a number'),
             ("/api/settings/poll_delay_ms", {"value": 1, "x": 2}, "nothing else"),
             ("/api/settings/poll_delay_ms", {}, "nothing else"),
             ("/api/settings/no_such_thing", {"value": 1}, "unknown setting"),
             ("/api/settings/max_log_line", {"value": 1.5}, "must be a int")]
    for path, body, message in cases:
        r = call("PUT", path, json=body)
        assert r.status_code == 400, (path, body)
        assert message in r.json()["error"], (body, r.json())
    assert rt.settings.poll_delay == before


def test_malformed_json_bodies_are_400(call: Call) -> None:
    for body in (b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe{}", b"[" * 50_000):
        r = call("PUT", "/api/settings/poll_delay_ms", content=body,
                 headers={"Content-Type": "application/json"})
        assert r.status_code == 400, body[:10]
        assert r.json()["error"], body[:10]


def test_non_finite_numbers_become_text_not_invalid_json(rt: Runtime, call: Call,
                                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "odd.lua"
    path.write_text('stats.set("ratio", 0/0)\nstats.set("big", 1/0)\nstats.set("small", -1/0)\n'
                    "function poll() return 1000 end\n")
    rt.load(path).start()
    rt.run_due()
    rt.bus.emit("odd", {"v": float("nan"), "ok": 1.5})
    r = call("GET", "/api/scripts")
    assert r.status_code == 200
    odd = next(row for row in json.loads(r.text)["scripts"] if row["name"] == "odd")
    assert odd["stats"] == {"ratio": "NaN", "big": "Infinity", "small": "-Infinity"}
    events = call("GET", "/api/events", params={"type": "odd"}).json()["events"]
    assert events[0]["data"] == {"v": "NaN", "ok": 1.5}
    lines = call("GET", "/api/events", params={"type": "odd", "format": "ndjson"}).text
    assert json.loads(lines.splitlines()[0])["data"]["v"] == "NaN"
