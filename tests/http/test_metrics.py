"""``/metrics`` parses with the Prometheus client's own parser, and its figures
equal the admin ``events`` and ``scripts`` answers after a run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.http.streams_support import serve

from moonbus import Runner, Runtime
from moonbus.http.login_counters import LoginCounters
from moonbus.http.metrics import metrics_registry, metrics_routes
from moonbus.http.streams import StreamRoutes

pytest.importorskip("prometheus_client")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def _scrape(rt: Runtime, **parts: object) -> str:
    with serve(metrics_routes(rt, **parts)) as base:  # type: ignore[arg-type]
        response = httpx.get(base + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(threaded=False, clock=lambda: 0.0,
                      events=f"sqlite:///{tmp_path / 'events.db'}")
    yield runtime
    runtime.close()


def _run(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "miner.lua").write_text(
        'events:on("hit", function(e) if e.n % 3 == 0 then error("boom") end end)\n'
        'function poll() end\n')
    (tmp_path / "idle.lua").write_text('function poll() end\n')
    miner = rt.load(tmp_path / "miner.lua")
    rt.load(tmp_path / "idle.lua")
    miner.start()
    for n in range(1, 31):
        rt.bus.emit("hit", {"n": n}, tick=n)
        if n % 10 == 0:
            rt.bus.emit("chat", {"text": "hi"}, tick=n)
        rt.run_due()
    rt.flush_events()


def test_metrics_match_the_admin_events_and_scripts_figures(rt: Runtime, tmp_path: Path) -> None:
    _run(rt, tmp_path)
    samples, types = _parse(_scrape(rt))
    # admin `events`: "- <type>: <count>" per type
    for line in rt.admin.run("events").splitlines():
        match = re.fullmatch(r"- (\S+): (\d+)", line)
        assert match, line
        assert samples[("moonbus_events", (("type", match[1]),))] == int(match[2])
    assert types["moonbus_events"] == "gauge"
    stored = {labels[0][1] for (name, labels) in samples if name == "moonbus_events"}
    assert stored >= {"hit", "chat"}
    # admin `scripts`: "<name> <status> uptime=... polls=N handler_errors=N"
    lines = rt.admin.run("scripts").splitlines()
    assert len(lines) == 2
    for line in lines:
        match = re.fullmatch(r"(\S+) (\S+) uptime=\S+ polls=(\d+) handler_errors=(\d+)", line)
        assert match, line
        name, status, polls, errors = match[1], match[2], int(match[3]), int(match[4])
        script = (("script", name),)
        assert samples[("moonbus_script_polls_total", script)] == polls
        assert samples[("moonbus_script_handler_errors_total", script)] == errors
        assert samples[("moonbus_script_status", (("script", name), ("status", status)))] == 1
        others = [v for (n, labels), v in samples.items() if n == "moonbus_script_status"
                  and labels[0] == ("script", name) and labels[1] != ("status", status)]
        assert others and set(others) == {0.0}
    assert samples[("moonbus_script_handler_errors_total", (("script", "miner"),))] == 10
    bus = rt.bus.statistics()
    assert samples[("moonbus_events_emitted_total", ())] == bus.emitted
    assert types["moonbus_events_emitted"] == "counter"
    store = rt.event_store
    assert store is not None
    assert samples[("moonbus_store_appended_total", ())] == store.statistics().appended
    assert samples[("moonbus_store_stored", ())] == store.statistics().stored
    for name in ("checkpoint_failures", "journal_waits", "journal_orphans"):
        assert samples[(f"moonbus_store_{name}_total", ())] == getattr(store.statistics(), name)


def test_handler_calls_and_poll_latency_per_script(tmp_path: Path) -> None:
    now = [0.0]
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        _run(rt, tmp_path)
        now[0] = 0.13  # the next polls (poll_delay 0.1 s, due at 0.1) start 30 ms late
        rt.run_due()
        samples, types = _parse(_scrape(rt))
        hosts = {name: rt.scripts[name] for name in ("miner", "idle")}
        assert types["moonbus_script_handler_calls"] == "counter"
        assert types["moonbus_script_poll_latency_seconds"] == "histogram"
        for name, host in hosts.items():
            script = (("script", name),)
            info, stats = host.info(), host.statistics()
            assert samples[("moonbus_script_handler_calls_total", script)] == info.handler_calls
            late = stats.poll_latency
            assert samples[("moonbus_script_poll_latency_seconds_count", script)] == late.count
            assert samples[("moonbus_script_poll_latency_seconds_sum", script)] == \
                pytest.approx(late.total)
            assert late.count == info.polls
            for bound, count in late.buckets:
                le = "+Inf" if bound == float("inf") else repr(bound)
                key = ("moonbus_script_poll_latency_seconds_bucket", (("le", le), *script))
                assert samples[key] == count, (name, le)
        assert samples[("moonbus_script_handler_calls_total", (("script", "miner"),))] == 30
        assert samples[("moonbus_script_handler_calls_total", (("script", "idle"),))] == 0
        miner_late = hosts["miner"].statistics().poll_latency
        assert miner_late.count == 2 and miner_late.worst == pytest.approx(0.03)
        assert samples[("moonbus_script_poll_latency_seconds_bucket",
                        (("le", "0.025"), ("script", "miner")))] == 1
        assert samples[("moonbus_script_poll_latency_seconds_bucket",
                        (("le", "0.05"), ("script", "miner")))] == 2


def test_without_a_store_the_events_come_from_the_in_memory_log() -> None:
    with Runtime(threaded=False) as rt:
        for i in range(7):
            rt.bus.emit("a" if i % 2 else "b", {})
        samples, types = _parse(_scrape(rt))
        assert samples[("moonbus_events", (("type", "a"),))] == 3
        assert samples[("moonbus_events", (("type", "b"),))] == 4
        assert "moonbus_store_appended" not in types, "no store: its families are left out"
        assert "moonbus_runner_jobs" not in types and "moonbus_logins" not in types


def test_runner_rcon_http_logins_and_streams_families() -> None:
    logins = LoginCounters()
    logins.accepted()
    logins.accepted()
    logins.refused()
    logins.throttled()
    rcon = SimpleNamespace(statistics=lambda: SimpleNamespace(
        auth_successes=4, auth_failures=5, auth_throttled=6))
    with Runtime(threaded=False) as rt, Runner(workers=1) as runner:
        assert runner.submit("return 1 + ...", args=(41,), timeout=5).result() == 42
        with pytest.raises(Exception, match="nope"):
            runner.submit("error('nope')", timeout=5).result()
        streams = StreamRoutes(rt)
        samples, types = _parse(_scrape(rt, logins=logins, rcon=rcon, runner=runner,
                                        streams=streams))
    jobs = {labels[0][1]: v for (n, labels), v in samples.items()
            if n == "moonbus_runner_jobs_total"}
    assert jobs["submitted"] == 2 and jobs["done"] == 1 and jobs["failed"] == 1
    assert samples[("moonbus_runner_queue_depth", ())] == 0
    assert ("moonbus_runner_job_latency_seconds", (("quantile", "0.99"),)) in samples
    logins_seen = {(dict(labels)["frontend"], dict(labels)["outcome"]): v
                   for (n, labels), v in samples.items() if n == "moonbus_logins_total"}
    assert logins_seen == {("http", "accepted"): 2, ("http", "refused"): 1,
                           ("http", "throttled"): 1, ("rcon", "accepted"): 4,
                           ("rcon", "refused"): 5, ("rcon", "throttled"): 6}
    assert samples[("moonbus_http_stream_clients", (("stream", "events"),))] == 0
    assert types["moonbus_http_stream_clients_dropped"] == "counter"


def test_each_app_has_its_own_registry() -> None:
    with Runtime(threaded=False) as one, Runtime(threaded=False) as two:
        one.bus.emit("x", {})
        first = _parse(metrics_registry_text(one))[0]
        second = _parse(metrics_registry_text(two))[0]
    assert first[("moonbus_events_emitted_total", ())] == 1
    assert second[("moonbus_events_emitted_total", ())] == 0


def metrics_registry_text(rt: Runtime) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(metrics_registry(rt)).decode()


def test_metrics_over_a_real_server_while_a_stream_is_open(rt: Runtime) -> None:
    streams = StreamRoutes(rt)
    routes = [*streams.routes, *metrics_routes(rt, streams=streams)]
    with serve(routes, streams.close) as base, httpx.Client(timeout=10) as client, \
            client.stream("GET", base + "/api/stream/events") as stream:
        assert stream.status_code == 200
        text = ""
        for _ in range(500):
            text = client.get(base + "/metrics").text
            if 'moonbus_http_stream_clients{stream="events"} 1.0' in text:
                break
        samples, _ = _parse(text)
    assert samples[("moonbus_http_stream_clients", (("stream", "events"),))] == 1
    assert samples[("moonbus_http_stream_clients_accepted_total", (("stream", "events"),))] == 1


def test_serve_http_hands_a_runner_to_metrics() -> None:
    """An embedding game's job pool shows in ``/metrics`` of ``rt.serve_http``
    (through the real server and its token), and is left out without one."""
    with Runtime(threaded=False) as rt, Runner(workers=1) as runner:
        assert runner.submit("return 1 + ...", args=(1,), timeout=5).result() == 2
        with_runner = rt.serve_http(port=0, token="runner-metrics-token", runner=runner)
        without = rt.serve_http(port=0, token="runner-metrics-token")
        auth = {"authorization": "Bearer runner-metrics-token"}
        texts = [httpx.get(server.url + "/metrics", headers=auth, timeout=10)
                 for server in (with_runner, without)]
    assert [r.status_code for r in texts] == [200, 200]
    samples, _ = _parse(texts[0].text)
    assert samples[("moonbus_runner_jobs_total", (("outcome", "done"),))] == 1
    assert "moonbus_runner_jobs_total" not in texts[1].text


def test_deferred_delivery_and_scheduler_counters(tmp_path: Path) -> None:
    # Deferred delivery's pacing counters and the scheduler's are in /metrics
    # with the values the runtime reports (docs/http.md).
    script = tmp_path / "counter.lua"
    script.write_text('events:on("e", function() shared:int("n"):increment() end)\n',
                      encoding="utf-8")
    with Runtime(threaded=True, workers=1, event_delivery="deferred") as rt:
        host = rt.load(script)
        host.start()
        for _ in range(20):
            rt.bus.emit("e")
        assert rt.flush_events(30)
        samples, types = _parse(_scrape(rt))
        stats = rt.deferred_statistics()
        assert stats is not None and stats.delivered == 20
        assert samples[("moonbus_deferred_delivered_total", ())] == 20
        assert samples[("moonbus_deferred_pending", ())] == 0
        assert types["moonbus_deferred_paced_emits"] == "counter"
        for name in ("dropped", "paced_emits", "pace_gave_up", "pace_declined"):
            assert samples[(f"moonbus_deferred_{name}_total", ())] == getattr(stats, name)
        assert samples[("moonbus_deferred_host_call_seconds_total", ())] >= 0
        sched = rt.scheduler.statistics()
        assert samples[("moonbus_scheduler_waits_total", ())] <= sched.waits
        assert ("moonbus_scheduler_assists_total", ()) in samples
    with Runtime(threaded=False) as rt:  # immediate delivery: no deferred families
        samples, _ = _parse(_scrape(rt))
        assert not any(name.startswith("moonbus_deferred_") for name, _ in samples)
        assert ("moonbus_scheduler_assists_total", ()) in samples

