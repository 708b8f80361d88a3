"""Prometheus metrics of one engine, on a registry of its own (two engines never collide)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from infinite_scheduler.errors import PortUnavailable

PREFIX = "infinite_scheduler"
_LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class StoreMetrics:
    """The store's own events (repos.events.StoreEvents) as series: conflicts retried, and
    the host of a multi-host URL written through."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.conflicts = Counter(
            f"{PREFIX}_store_conflicts",
            "Statements run again after a deadlock, a lock wait timeout or a Galera"
            " certification conflict (1213 at COMMIT).",
            ["operation"],
            registry=registry,
        )
        self.failovers = Counter(
            f"{PREFIX}_store_failovers",
            "Times the store's writes moved to another host of the multi-host URL.",
            registry=registry,
        )
        self.writer_host = Gauge(
            f"{PREFIX}_store_writer",
            "1 for the host of the multi-host store URL written through now, 0 for the others.",
            ["host"],
            registry=registry,
        )
        self._hosts: set[str] = set()

    def conflict(self, operation: str) -> None:
        self.conflicts.labels(operation).inc()

    def failover(self, from_address: str, to_address: str, reason: str) -> None:
        self.failovers.inc()

    def writer(self, address: str) -> None:
        for host in self._hosts - {address}:
            self.writer_host.labels(host).set(0)
        self._hosts.add(address)
        self.writer_host.labels(address).set(1)


@dataclass(frozen=True, slots=True)
class EntityMetrics:
    """The counters of one entity type, labelled once (labels() per job costs more than inc)."""

    scheduled: Counter
    claimed: Counter
    fired: Counter
    succeeded: Counter
    failed: Counter
    retried: Counter
    missed: Counter
    overran: Counter
    fenced: Counter
    throttled_late: Counter


class Metrics:
    """The engine's counters, gauges and histograms; `serve()` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None
        self._job_series()
        self._engine_series()
        self._store_series()
        self._cluster_series()
        self._category_series()
        #: What the store adapters report (repos.events): hand it to the adapters built.
        self.store_events = StoreMetrics(self.registry)

    def _job_series(self) -> None:
        """What happens to jobs, by entity type."""
        counter = self._counter
        self.scheduled = counter("jobs_scheduled", "Jobs stored through the engine.")
        self.claimed = counter("jobs_claimed", "Jobs claimed from the store into the wheel.")
        self.fired = counter("jobs_fired", "Jobs handed to their handler.")
        self.succeeded = counter("jobs_succeeded", "Jobs whose handler returned.")
        self.failed = counter("jobs_failed", "Jobs that failed with no attempts left.")
        self.retried = counter("jobs_retried", "Failed attempts scheduled again.")
        self.missed = counter("jobs_missed", "Overdue jobs dropped by misfire policy do_nothing.")
        self.overran = counter(
            "handler_overruns", "Sync handler calls still running past handlers.timeout_s."
        )
        self.fenced = counter(
            "fenced_writes",
            "Writes about this node's claims (ack, failure, payload read) that found the row"
            " taken over by another node: left unchanged.",
        )
        self.lateness = self._histogram(
            "fire_lateness_seconds", "How long after its due time a job was handed to its handler."
        )

    def _engine_series(self) -> None:
        """The engine's own health: fetch rounds, what it holds, what runs, the event loop."""
        self.fetch_duration = Histogram(
            f"{PREFIX}_fetch_duration_seconds",
            "Duration of one claim round.",
            registry=self.registry,
        )
        self.held = self._gauge("jobs_held", "Jobs held in the wheel.")
        self.backlog = self._gauge(
            "jobs_backlog",
            "Jobs of the entity type due and out of the wheel whose outcome is not written yet"
            " (waiting for a handler, running, or waiting for their ack): a figure that keeps"
            " rising is a backlog on this node.",
            "entity",
        )
        self.in_flight = self._gauge("jobs_in_flight", "Handlers running now.")
        self.overrunning = self._gauge(
            "handlers_overrunning",
            "Sync handler calls running past their timeout now (threads cannot be stopped).",
        )
        self.loop_lag = self._histogram(
            "loop_lag_seconds",
            "How late the event loop ran a callback due every 0.1 s (blocking code delays it).",
        )
        self.loop_stalls = Counter(
            f"{PREFIX}_loop_stalls",
            "Times the event loop was blocked for handlers.loop_lag_warn_s or longer.",
            registry=self.registry,
        )
        self._throttle_series()

    def _throttle_series(self) -> None:
        """The process's own load, and whether the engine throttles its claims for it."""
        self.throttled = self._gauge(
            "throttled",
            "1 while the engine throttles its claims (a [throttle] limit was passed), else 0.",
        )
        self.cpu_percent = self._gauge(
            "cpu_percent",
            "CPU this process used over the last throttle.check_interval_s, percent of one core.",
        )
        self.memory_rss = self._gauge(
            "memory_rss_bytes", "This process's resident memory at the last throttle check."
        )
        self.throttled_late = self._counter(
            "throttled_late_jobs",
            "Jobs claimed after their due time from a backlog whose claims the throttle held"
            " back (counted until that backlog is drained): they fired late, later for the"
            " throttle.",
        )

    def _store_series(self) -> None:
        """The shards of each entity type and what retention did to them."""
        self.shards_dropped = self._counter("shards_dropped", "Shards dropped whole by retention.")
        self.unfinished_dropped = self._counter(
            "unfinished_rows_dropped",
            "Rows not DONE/FAILED/CANCELLED/MISSED that were in shards retention dropped.",
        )
        self.shards_live = self._gauge("shards_live", "Shards in the store.", "entity")
        self.shards_ahead = self._gauge(
            "shards_ahead",
            "Whole periods with a shard made after the current one, by the last maintenance pass"
            " of this node (computed when scraped: it falls while no pass runs; -1: not even the"
            " current period has one, and inserts due now are refused).",
            "entity",
        )
        self.unknown_status = self._gauge(
            "rows_unknown_status",
            "Rows due by now (or in shards being dropped) whose status this version does not"
            " know: never fired.",
            "entity",
        )

    def _cluster_series(self) -> None:
        """The nodes sharing the store, as this node's heartbeat sees them."""
        self.nodes_live = self._gauge(
            "nodes_live", "Nodes whose heartbeat was recent at this node's last renewal."
        )
        self.takeovers = Counter(
            f"{PREFIX}_takeovers",
            "Dead nodes (epochs) whose claims this node took over.",
            registry=self.registry,
        )
        self.claims_taken_over = self._counter(
            "claims_taken_over",
            "CLAIMED rows of dead nodes (or of runs that ended without handing back) that this"
            " node moved back to PENDING: they fire once, now, wherever claimed next.",
        )
        self.heartbeat_lag = self._gauge(
            "heartbeat_lag_seconds",
            "Seconds since this node last renewed its heartbeat (when the renewal was sent);"
            " at cluster.node_timeout_s minus one interval it stops firing.",
        )
        self.lease_held = self._gauge(
            "lease_held",
            "1 while this node holds the store-wide lease `name` (it runs that chore), else 0.",
            "name",
        )

    def _category_series(self) -> None:
        """Each configured category on this node: what runs, what waits, whether paused."""
        self.category_running = self._gauge(
            "category_running", "Handlers of the category running now.", "category"
        )
        self.category_waiting = self._gauge(
            "category_waiting",
            "Jobs of the category due and waiting for a handler (its limits, a pause, or"
            " more jobs due than handlers).",
            "category",
        )
        self.category_paused = self._gauge(
            "category_paused", "1 while the category is paused on this node, else 0.", "category"
        )

    def watch_category(
        self,
        name: str,
        *,
        running: Callable[[], float],
        waiting: Callable[[], float],
        paused: Callable[[], float],
    ) -> None:
        """Read a category's series from the dispatcher when scraped: nothing per job."""
        self.category_running.labels(name).set_function(running)
        self.category_waiting.labels(name).set_function(waiting)
        self.category_paused.labels(name).set_function(paused)

    def watch_backlog(self, entity: str, backlog: Callable[[], float]) -> None:
        """Read an entity type's backlog from its lane when scraped: nothing per job."""
        self.backlog.labels(entity).set_function(backlog)

    def _counter(self, name: str, doc: str) -> Counter:
        return Counter(f"{PREFIX}_{name}", doc, ["entity"], registry=self.registry)

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str) -> Histogram:
        return Histogram(f"{PREFIX}_{name}", doc, buckets=_LATENESS_BUCKETS, registry=self.registry)

    def for_entity(self, name: str) -> EntityMetrics:
        counters = (
            self.scheduled,
            self.claimed,
            self.fired,
            self.succeeded,
            self.failed,
            self.retried,
            self.missed,
            self.overran,
            self.fenced,
            self.throttled_late,
        )
        return EntityMetrics(*(c.labels(name) for c in counters))

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on host:port from a daemon thread (port 0 disables it).

        Raises PortUnavailable (a ConfigError naming ``metrics_port``) when it cannot listen.
        """
        if port and self._server is None:
            try:
                self._server, _thread = start_http_server(port, host, registry=self.registry)
            except OSError as exc:
                raise PortUnavailable("metrics_port", port, exc) from exc

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
