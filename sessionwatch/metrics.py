"""Every Prometheus metric sessionwatch exports, in one place: one class per process kind.

Each class takes the process's `CollectorRegistry` (tests pass a fresh one) and registers its
metrics there; `sessionwatch/observability.py` serves that registry on `/metrics`. Names follow
Prometheus conventions: `sessionwatch_<what>_total` for counters, base units (`_seconds`,
`_bytes`), no unit in a label.

Label cardinality: every label here takes a small, bounded set of values - a stage, a reason
code, a detector id, a severity, an action, a tenant, a topic/partition, a sink, a table, a
route template. Never put a session, user, address, event id or raw path in a label: each
distinct value is a time series kept forever by Prometheus. Tenants and reason codes come from
input, so they pass through a `_Bounded` cap: past `MAX_LABEL_VALUES` distinct values, the rest
are counted under `_other` (a flood of made-up tenants must not take the metrics down).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from producers.contract import Finding, Revocation

MAX_LABEL_VALUES = 200
OTHER = "_other"

# Event -> decision: 1 ms .. 60 s (the user stage holds decisions for the allowed lateness).
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)
# One ClickHouse insert, or one sink delivery: 1 ms .. 30 s.
IO_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A console page: 5 ms .. 10 s (charts are drawn server-side).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Bounded:
    """The first `limit` distinct values of a label as themselves, any later one as `_other`."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        value = value or ""
        if value in self.seen:
            return value
        with self._lock:
            if len(self.seen) >= self.limit:
                return OTHER
            self.seen.add(value)
        return value


class ConsumerMetrics:
    """What every Kafka-consuming process exports: lag per partition, and the process itself."""

    def __init__(self, registry: CollectorRegistry, *, process_collector: bool = True) -> None:
        self.registry = registry
        if process_collector:
            # process_resident_memory_bytes, process_cpu_seconds_total, open fds (Linux /proc).
            ProcessCollector(registry=registry)
        self.consumer_lag = Gauge(
            "sessionwatch_consumer_lag_messages",
            "Messages behind the log end per input partition (fetched high watermark - position)",
            ["group", "topic", "partition"], registry=registry)
        self.offset_holes = Counter(
            "sessionwatch_offset_holes_total",
            "Offsets missing between two records the consumer was handed, by what became of them: "
            "reread (sought back and read again), filled (the record came), accepted (given up)",
            ["topic", "outcome"], registry=registry)

    def offset_hole(self, topic: str, outcome: str) -> None:
        """storage/offset_holes.py: a hole in a partition's offsets (the embedded broker)."""
        self.offset_holes.labels(topic, outcome).inc()

    def set_lag(self, topic: str, partition: int, high_watermark: int, position: int,
                group: str = "") -> None:
        """Lag from the high watermark a Fetch returned (not ListOffsets: the embedded broker
        under-reports the log end there). A position before the first fetch counts as 0 lag."""
        lag = max(high_watermark - position, 0) if position >= 0 and high_watermark >= 0 else 0
        self.consumer_lag.labels(group, topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int, group: str = "") -> None:
        """A revoked partition: its lag is another process's to report now."""
        try:
            self.consumer_lag.remove(group, topic, str(partition))
        except KeyError:
            pass


class WorkerMetrics(ConsumerMetrics):
    """The detection worker (`sessionwatch worker`): what the stages count, state, lag."""

    def __init__(self, registry: CollectorRegistry, *, process_collector: bool = True) -> None:
        super().__init__(registry, process_collector=process_collector)
        self._tenant = _Bounded()
        self._reason = _Bounded(50)
        self._detector = _Bounded()
        self.events_received = Counter(
            "sessionwatch_events_received_total",
            "Messages read by a worker stage (session: sessionwatch.events; user, source: the "
            "worker's internal topics)", ["stage"], registry=registry)
        self.events_processed = Counter(
            "sessionwatch_events_processed_total",
            "Events that went through the session stage (dead letters and duplicates excluded)",
            registry=registry)
        self.events_duplicate = Counter(
            "sessionwatch_events_duplicate_total",
            "Redelivered events dropped by event id", registry=registry)
        self.events_late = Counter(
            "sessionwatch_events_late_total",
            "Events older than the allowed lateness when they reached a merging stage",
            ["stage"], registry=registry)
        self.dead_letters = Counter(
            "sessionwatch_events_dead_lettered_total",
            "Messages sent to sessionwatch.deadletter, by stage and reason code",
            ["stage", "reason"], registry=registry)
        self.findings = Counter(
            "sessionwatch_findings_total", "Findings reported by detectors",
            ["detector", "severity", "tenant"], registry=registry)
        self.revocations = Counter(
            "sessionwatch_revocations_total",
            "Decisions emitted by the policy (action revoke/step_up/block, scope session/user/"
            "source), by the first (strongest) reason's detector",
            ["detector", "action", "scope", "tenant"], registry=registry)
        self.decision_latency = Histogram(
            "sessionwatch_event_to_decision_seconds",
            "Wall clock at the decision minus the triggering event's time, once per revocation",
            buckets=DECISION_BUCKETS, registry=registry)
        self.state_entries = Gauge(
            "sessionwatch_state_entries", "Keys in a state store (estimate)", ["store"],
            registry=registry)
        self.state_bytes = Gauge(
            "sessionwatch_state_bytes", "Bytes of a state store (estimate: live data on disk)",
            ["store"], registry=registry)
        # The hot path (every event) uses pre-bound children: no label lookup per message.
        self._received = {s: self.events_received.labels(s) for s in ("session", "user", "source")}
        self._late = {s: self.events_late.labels(s) for s in ("user", "source")}

    # The stages call these (streams/session_stage.py: StageMetrics).
    def received(self, stage: str) -> None:
        self._received[stage].inc()

    def processed(self) -> None:
        self.events_processed.inc()

    def duplicate(self) -> None:
        self.events_duplicate.inc()

    def late(self, stage: str, n: int = 1) -> None:
        if n:
            self._late[stage].inc(n)

    def dead_lettered(self, stage: str, reason: str) -> None:
        self.dead_letters.labels(stage, self._reason(reason)).inc()

    def decided(self, findings: Iterable[Finding], revocations: Iterable[Revocation],
                now: float | None = None) -> None:
        """Findings and revocations just emitted; `now` (epoch seconds) is the decision's wall
        clock, taken here when not given."""
        for f in findings:
            self.findings.labels(self._detector(f.detector), f.severity.value,
                                 self._tenant(f.tenant)).inc()
        for r in revocations:
            detector = r.reasons[0].detector if r.reasons else ""
            self.revocations.labels(self._detector(detector), r.action.value, r.scope.value,
                                    self._tenant(r.tenant)).inc()
            at = time.time() if now is None else now
            # A clock ahead of ours (the app's) would give a negative latency: 0, not a lie.
            self.decision_latency.observe(max(at - r.event_time.timestamp(), 0.0))

    def set_state(self, store: str, entries: int, size_bytes: int) -> None:
        self.state_entries.labels(store).set(entries)
        self.state_bytes.labels(store).set(size_bytes)


class ApplierMetrics(ConsumerMetrics):
    """The revocation applier (`sessionwatch apply`): per sink (redis, webhook, caep, ...)."""

    def __init__(self, registry: CollectorRegistry, *, process_collector: bool = True) -> None:
        super().__init__(registry, process_collector=process_collector)
        self.deliveries = Counter(
            "sessionwatch_sink_deliveries_total",
            "Revocations handled by a sink: delivered, unchanged (nothing to do), dead_lettered",
            ["sink", "outcome"], registry=registry)
        self.retries = Counter(
            "sessionwatch_sink_retries_total", "Delivery attempts that failed and were retried",
            ["sink"], registry=registry)
        self.unavailable = Gauge(
            "sessionwatch_sink_unavailable",
            "1 while a sink is unavailable (its loop is retrying), else 0", ["sink"],
            registry=registry)
        self.delivery_delay = Histogram(
            "sessionwatch_sink_delivery_delay_seconds",
            "Revocation decided_at -> delivered by a sink (wall clock)", ["sink"],
            buckets=DECISION_BUCKETS, registry=registry)

    def delivered(self, sink: str, outcome: str = "delivered",
                  delay_s: float | None = None) -> None:
        self.deliveries.labels(sink, outcome).inc()
        if delay_s is not None:
            self.delivery_delay.labels(sink).observe(max(delay_s, 0.0))

    def retried(self, sink: str) -> None:
        self.retries.labels(sink).inc()

    def set_unavailable(self, sink: str, unavailable: bool) -> None:
        self.unavailable.labels(sink).set(1 if unavailable else 0)


class ArchiverMetrics(ConsumerMetrics):
    """The archiver (`sessionwatch archive`): rows and inserts per ClickHouse table."""

    def __init__(self, registry: CollectorRegistry, *, process_collector: bool = True) -> None:
        super().__init__(registry, process_collector=process_collector)
        self.rows = Counter(
            "sessionwatch_archive_rows_total", "Rows inserted into an archive table",
            ["table"], registry=registry)
        self.insert_duration = Histogram(
            "sessionwatch_archive_insert_duration_seconds", "One insert into an archive table",
            ["table"], buckets=IO_BUCKETS, registry=registry)
        self.insert_failures = Counter(
            "sessionwatch_archive_insert_failures_total",
            "Inserts that failed (retried at the next flush)", ["table"], registry=registry)

    def inserted(self, table: str, rows: int, seconds: float) -> None:
        self.rows.labels(table).inc(rows)
        self.insert_duration.labels(table).observe(seconds)

    def insert_failed(self, table: str) -> None:
        self.insert_failures.labels(table).inc()


class ConsoleMetrics:
    """The operator console (`sessionwatch console`): requests by route template and status."""

    def __init__(self, registry: CollectorRegistry, *, process_collector: bool = True) -> None:
        self.registry = registry
        if process_collector:
            ProcessCollector(registry=registry)
        self._route = _Bounded(100)
        self.requests = Counter(
            "sessionwatch_console_requests_total",
            "Console HTTP requests by route template (never the raw path), method and status",
            ["route", "method", "status"], registry=registry)
        self.request_duration = Histogram(
            "sessionwatch_console_request_duration_seconds", "Console request handling time",
            ["route"], buckets=REQUEST_BUCKETS, registry=registry)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """`route` is the template (`/sessions/{session}`), or "unmatched" for a 404."""
        route = self._route(route)
        self.requests.labels(route, method.upper()[:10], str(status)).inc()
        self.request_duration.labels(route).observe(seconds)


class RequestMetricsMiddleware:
    """ASGI middleware feeding `ConsoleMetrics`: `Middleware(RequestMetricsMiddleware,
    metrics=...)` in the console's Starlette app. The route label is the matched endpoint's
    name (Starlette writes it into the scope), never the raw path."""

    def __init__(self, app: Any, metrics: ConsoleMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        start = time.perf_counter()

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.request(_route_name(scope), scope.get("method", "GET"), status["code"],
                                 time.perf_counter() - start)


def _route_name(scope: dict[str, Any]) -> str:
    """The matched endpoint's name. A middleware between us and the router that copies the
    scope (the console's SecurityMiddleware adds the principal) hides the router's `endpoint`
    from us, and a request refused before the router has none: then match the app's routes
    here (a few dozen, once per request), so a refused /api/... counts under its route too."""
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        return getattr(endpoint, "__name__", None) or "unmatched"
    from starlette.routing import Match

    for route in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
        try:
            match, child = route.matches(scope)
        except Exception:  # noqa: BLE001 - a route that cannot judge this scope: not it
            continue
        if match == Match.FULL:
            found = child.get("endpoint")
            return getattr(found, "__name__", None) or getattr(route, "name", None) or "unmatched"
    return "unmatched"
