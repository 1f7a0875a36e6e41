"""``GET /metrics``: the runtime's counters in the Prometheus text format.

Nothing is counted here: a custom collector reads the counters the runtime
already keeps (``Bus.statistics``, ``ScriptHost.info``/``statistics``, the
event store's ``statistics``/``summary``, the lifecycle and script-event
statistics, a runner's and the RCON server's, the HTTP token checks and
request counters, the stream hubs) at scrape time, so a scrape costs the game nothing between
scrapes. Each app gets its own ``CollectorRegistry`` (no global registry, so
two runtimes in one process never mix their figures).

``moonbus_events{type}`` is the count of events of each type in the event log
— the durable store when one is attached, else the bus's in-memory log —
exactly the figures of the admin ``events`` command (retention prunes both).
Families of a part that is absent (no store, no runner, no RCON server, no
login counters) are left out, not reported as zero.

Threads: the route renders on a worker thread of the server (the store's
``summary`` is a query); the collector only reads counters and snapshots,
which every part allows from any thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from moonbus.host.lifecycle import ACTIVE

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from moonbus.admin.rcon_server import RconServerStatistics
    from moonbus.http.login_counters import LoginCounters
    from moonbus.http.settings import HttpCounters
    from moonbus.http.streams import StreamRoutes
    from moonbus.runner.pool import Runner
    from moonbus.runtime import Runtime

__all__ = ["SCRIPT_STATUSES", "RuntimeCollector", "metrics_registry", "metrics_routes"]

SCRIPT_STATUSES = ("loaded", *ACTIVE, "stopped", "failed")


class HasRconStatistics(Protocol):
    """The RCON server, as far as ``/metrics`` needs it."""

    def statistics(self) -> RconServerStatistics: ...


def _counter(name: str, doc: str, value: float | None = None,
             labels: list[str] | None = None) -> Any:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, value=value, labels=labels)


def _gauge(name: str, doc: str, value: float | None = None,
           labels: list[str] | None = None) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value, labels=labels)


def _histogram(name: str, doc: str, labels: list[str]) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    return HistogramMetricFamily(name, doc, labels=labels)


def _bound(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it (``+Inf``, ``0.005``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class RuntimeCollector:
    """A prometheus-client collector over one runtime (see the module docstring)."""

    def __init__(self, rt: Runtime, *, logins: LoginCounters | None = None,
                 streams: StreamRoutes | None = None, rcon: HasRconStatistics | None = None,
                 runner: Runner | None = None, http: HttpCounters | None = None) -> None:
        self._rt, self._logins, self._streams = rt, logins, streams
        self._rcon, self._runner, self._http = rcon, runner, http

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        yield from self._bus()
        yield from self._scripts()
        yield from self._host()
        yield from self._deferred()
        yield from self._store()
        yield from self._runner_families()
        yield from self._logins_families()
        yield from self._stream_families()
        yield from self._http_families()

    def _bus(self) -> Iterator[Metric]:
        rt = self._rt
        stats = rt.bus.statistics()
        yield _counter("moonbus_events_emitted", "Events committed on the bus.", stats.emitted)
        yield _gauge("moonbus_events_last_seq", "Seq of the newest committed event.",
                     stats.last_seq)
        yield _counter("moonbus_bus_handler_calls", "Handler calls made by the bus "
                       "(Python subscribers and scripts' event engines).", stats.delivered)
        yield _counter("moonbus_bus_handler_errors", "Bus handlers that raised.",
                       stats.handler_errors)
        yield _counter("moonbus_bus_cascades_cut", "Top-level emits whose cascade hit a limit.",
                       stats.cascades_cut)
        by_type = _gauge("moonbus_events", "Events in the event log by type (the durable "
                         "store when attached, else the in-memory log): admin 'events'.",
                         labels=["type"])
        store = rt.event_store
        if store is not None:
            store.flush()
            counts = store.summary()
        else:
            counts = {}
            for event in rt.bus.log():
                counts[event.type] = counts.get(event.type, 0) + 1
        for event_type in sorted(counts):
            by_type.add_metric([event_type], counts[event_type])
        yield by_type

    def _scripts(self) -> Iterator[Metric]:
        status = _gauge("moonbus_script_status", "1 for the script's current status.",
                        labels=["script", "status"])
        families = {
            "polls": _counter("moonbus_script_polls", "Polls run.", labels=["script"]),
            "poll_errors": _counter("moonbus_script_poll_errors", "Polls that raised.",
                                    labels=["script"]),
            "handler_calls": _counter("moonbus_script_handler_calls",
                                      "Event handler calls run (either engine; ended, failed "
                                      "or cut).", labels=["script"]),
            "handler_errors": _counter("moonbus_script_handler_errors",
                                       "Event handlers that raised.", labels=["script"]),
            "handler_timeouts": _counter("moonbus_script_handler_timeouts",
                                         "Handlers cut by their time limit.", labels=["script"]),
            "handlers_skipped": _counter("moonbus_script_handlers_skipped",
                                         "Handler calls not run (budget spent, script "
                                         "blocked).", labels=["script"]),
            "handlers_refused": _counter("moonbus_script_handlers_refused",
                                         "events:on calls refused (max_handlers_per_script).",
                                         labels=["script"]),
        }
        uptime = _gauge("moonbus_script_uptime_seconds", "Seconds since the script started "
                        "(0 when not running).", labels=["script"])
        queued = _gauge("moonbus_script_deferred_queued", "Main-engine handler calls waiting.",
                        labels=["script"])
        latency = _histogram("moonbus_script_poll_latency_seconds", "How late polls started "
                             "after their due time (moonbus.host.poll_latency).",
                             labels=["script"])
        for name, host in self._rt.scripts.items():
            info = host.info()
            for known in SCRIPT_STATUSES:
                status.add_metric([name, known], 1.0 if info.status == known else 0.0)
            for attr, family in families.items():
                family.add_metric([name], getattr(info, attr))
            uptime.add_metric([name], info.uptime)
            stats = host.statistics()
            queued.add_metric([name], stats.deferred_queued)
            late = stats.poll_latency
            latency.add_metric([name], [(_bound(b), n) for b, n in late.buckets], late.total)
        yield status
        yield from families.values()
        yield uptime
        yield queued
        yield latency

    def _host(self) -> Iterator[Metric]:
        life = self._rt.lifecycle_statistics()
        for field in ("stop_aborts", "clamped_numbers", "refused_numbers",
                      "scheduler_job_exceptions", "scheduler_worker_errors",
                      "threads_not_ended"):
            yield _counter(f"moonbus_lifecycle_{field}", f"Lifecycle limits: {field}.",
                           getattr(life, field))
        notes = self._rt.script_event_statistics()
        yield _counter("moonbus_script_notifications", "Script start/stop/failure/handler-"
                       "error records posted.", notes.posted)
        yield _counter("moonbus_script_notifications_dropped", "Handler-error records "
                       "dropped (backlog full).", notes.dropped)

    def _deferred(self) -> Iterator[Metric]:
        # Deferred delivery and its pacing (moonbus.host.deferred), when on;
        # the scheduler's workers (moonbus.host.scheduler) always.
        sched = self._rt.scheduler.statistics()
        yield _counter("moonbus_scheduler_assists", "Slices a worker started beside another's "
                       "(a stuck slice, or long slices while behind).", sched.assists)
        yield _counter("moonbus_scheduler_waits", "Times a scheduler worker went to sleep.",
                       sched.waits)
        stats = self._rt.deferred_statistics()
        if stats is None:
            return
        yield _counter("moonbus_deferred_delivered", "Deferred handler calls delivered.",
                       stats.delivered)
        yield _gauge("moonbus_deferred_pending", "Deferred deliveries queued or running.",
                     stats.pending)
        yield _gauge("moonbus_deferred_peak", "Most deferred deliveries queued at once.",
                     stats.peak)
        yield _counter("moonbus_deferred_dropped", "Deliveries not queued: the queue held "
                       "max_queued_deliveries.", stats.dropped)
        yield _counter("moonbus_deferred_paced_emits", "Emits that waited for the event "
                       "thread (pacing).", stats.paced_emits)
        yield _counter("moonbus_deferred_paced_seconds", "Seconds emitters waited (pacing).",
                       stats.paced_seconds)
        yield _counter("moonbus_deferred_pace_gave_up", "Paced waits given up.",
                       stats.pace_gave_up)
        yield _counter("moonbus_deferred_pace_declined", "Late emits not paced: deliveries "
                       "are costly.", stats.pace_declined)
        yield _gauge("moonbus_deferred_delivery_cost_seconds", "What one delivery costs the "
                     "event thread (CPU plus wall time in host calls while an emit waited; last "
                     "estimate).",
                     stats.delivery_cpu)
        yield _counter("moonbus_deferred_host_call_seconds", "Event-thread wall time inside "
                       "handlers' calls into Python.", stats.host_call_seconds)

    def _store(self) -> Iterator[Metric]:
        store = self._rt.event_store
        if store is None:
            return
        stats = store.statistics()
        yield _counter("moonbus_store_appended", "Events appended to the event store.",
                       stats.appended)
        yield _counter("moonbus_store_pruned", "Events removed by retention.", stats.pruned)
        yield _gauge("moonbus_store_stored", "Events held by the event store.", stats.stored)
        yield _gauge("moonbus_store_pending", "Events appended, not yet written (fast mode).",
                     stats.pending)
        failures = _counter("moonbus_store_append_failures", "Appends that raised, by kind.",
                            labels=["kind"])
        for kind in sorted(stats.append_failures):
            failures.add_metric([kind], stats.append_failures[kind])
        yield failures
        yield _counter("moonbus_store_retries", "Commands re-sent after a transient failure.",
                       stats.retries)
        yield _counter("moonbus_store_data_losses", "Times the server had lost events.",
                       stats.data_losses)
        yield _counter("moonbus_store_checkpoint_failures", "SQLite WAL checkpoints that "
                       "failed (the WAL grows until one succeeds).", stats.checkpoint_failures)
        yield _counter("moonbus_store_journal_waits", "Appends that found the SQLite journal "
                       "full and waited for its writer.", stats.journal_waits)
        yield _counter("moonbus_store_journal_orphans", "Journals of another database moved "
                       "aside at open.", stats.journal_orphans)

    def _runner_families(self) -> Iterator[Metric]:
        runner = self._runner
        if runner is None:
            return
        stats = runner.statistics()
        jobs = _counter("moonbus_runner_jobs", "Runner jobs by outcome.", labels=["outcome"])
        for outcome in ("submitted", "done", "failed", "timed_out", "out_of_memory",
                        "cancelled", "rejected"):
            jobs.add_metric([outcome], getattr(stats, outcome))
        yield jobs
        yield _gauge("moonbus_runner_queue_depth", "Jobs waiting for a worker.",
                     stats.queue_depth)
        yield _gauge("moonbus_runner_busy_workers", "Workers running a job.", stats.busy_workers)
        latency = _gauge("moonbus_runner_job_latency_seconds", "Job latency (submit to "
                         "result) percentiles; absent before any job ran.", labels=["quantile"])
        for quantile, value in (("0.5", stats.latency_p50), ("0.95", stats.latency_p95),
                                ("0.99", stats.latency_p99)):
            if value is not None:
                latency.add_metric([quantile], value)
        yield latency

    def _logins_families(self) -> Iterator[Metric]:
        logins = _counter("moonbus_logins", "Admin logins by front end and outcome.",
                          labels=["frontend", "outcome"])
        if self._rcon is not None:
            rcon = self._rcon.statistics()
            logins.add_metric(["rcon", "accepted"], rcon.auth_successes)
            logins.add_metric(["rcon", "refused"], rcon.auth_failures)
            logins.add_metric(["rcon", "throttled"], rcon.auth_throttled)
        if self._logins is not None:
            http = self._logins.statistics()
            logins.add_metric(["http", "accepted"], http.accepted)
            logins.add_metric(["http", "refused"], http.refused)
            logins.add_metric(["http", "throttled"], http.throttled)
        if logins.samples:
            yield logins

    def _stream_families(self) -> Iterator[Metric]:
        if self._streams is None:
            return
        hubs = self._streams.statistics()
        open_now = _gauge("moonbus_http_stream_clients", "Open SSE streams.", labels=["stream"])
        for field in ("clients_accepted", "clients_refused", "clients_dropped",
                      "clients_dropped_behind", "items_queued", "pumps"):
            family = _counter(f"moonbus_http_stream_{field}", f"SSE streams: {field}.",
                              labels=["stream"])
            for kind, stats in hubs.items():
                family.add_metric([kind], getattr(stats, field))
            yield family
        for kind, stats in hubs.items():
            open_now.add_metric([kind], stats.clients)
        yield open_now


    def _http_families(self) -> Iterator[Metric]:
        if self._http is None:
            return
        stats = self._http.snapshot()
        family = _counter("moonbus_http_requests", "HTTP answers by what they were "
                          "(HttpStatistics; 'requests' is every answer).", labels=["kind"])
        for name, value in sorted(vars(stats).items()):
            family.add_metric([name], value)
        yield family


def metrics_registry(rt: Runtime, **parts: Any) -> CollectorRegistry:
    """A fresh registry holding only a ``RuntimeCollector`` over ``rt`` (``parts``:
    ``logins``, ``streams``, ``rcon``, ``runner``, ``http``, as in ``metrics_routes``)."""
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(rt, **parts))
    return registry


def metrics_routes(rt: Runtime, *, logins: LoginCounters | None = None,
                   streams: StreamRoutes | None = None, rcon: HasRconStatistics | None = None,
                   runner: Runner | None = None, http: HttpCounters | None = None) -> list[Route]:
    """``GET /metrics`` over ``rt`` and the optional parts (see the module docstring)."""
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response as PlainResponse
    from starlette.routing import Route

    registry = metrics_registry(rt, logins=logins, streams=streams, rcon=rcon, runner=runner,
                                http=http)

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return PlainResponse(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]
