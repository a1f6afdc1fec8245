"""Metric definitions: conventions, bounded labels, and the dashboard and Prometheus config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sessionwatch.metrics import (
    MAX_LABEL_VALUES,
    OTHER,
    ApplierMetrics,
    ArchiverMetrics,
    ConsoleMetrics,
    RequestMetricsMiddleware,
    WorkerMetrics,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "deploy/grafana/sessionwatch.json").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
KINDS = (WorkerMetrics, ApplierMetrics, ArchiverMetrics, ConsoleMetrics)
# What prometheus_client's process collector exports (the dashboard plots RSS).
PROCESS = {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"}


def families() -> dict[str, str]:
    """Every sessionwatch metric family defined, by name, with its type."""
    out: dict[str, str] = {}
    for kind in KINDS:
        for family in kind(CollectorRegistry(), process_collector=False).registry.collect():
            out[family.name] = family.type
    return out


def exposed_names() -> set[str]:
    """The sample names a scrape can show for every defined family."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {name + s for name, kind in families().items() for s in suffixes[kind]} | PROCESS


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]


def test_names_follow_prometheus_conventions():
    defined = families()
    assert len(defined) >= 20
    for kind in KINDS:
        for family in kind(CollectorRegistry(), process_collector=False).registry.collect():
            name = family.name
            assert name.startswith("sessionwatch_"), name
            assert re.fullmatch(r"[a-z_]+", name), name
            assert family.documentation and "\n" not in family.documentation, name
            if family.type == "histogram":
                assert name.endswith("_seconds"), f"{name}: histograms here measure time"
            assert not re.search(r"_(ms|milliseconds|kb|mb|minutes)$", name), f"{name}: base units"
            for sample_name in {s.name for s in family.samples}:
                assert not sample_name.endswith("_total_total"), sample_name


def test_no_label_can_hold_a_session_user_or_address():
    forbidden = {"session", "user", "ip", "address", "source", "event", "event_id", "path", "key"}
    declared: set[str] = set()
    for kind in KINDS:
        registry = kind(CollectorRegistry(), process_collector=False).registry
        for metric in registry._names_to_collectors.values():  # the declared label names
            declared |= set(metric._labelnames)
    assert {"tenant", "detector", "reason", "sink", "table", "route"} <= declared
    assert not forbidden & declared


def test_every_metric_the_dashboard_queries_exists():
    exposed = exposed_names()
    queried = {name for expr in dashboard_exprs()
               for name in re.findall(r"\b(?:sessionwatch|process)_[a-z_]+\b", expr)}
    assert queried, "the dashboard queries no metric"
    assert queried <= exposed, sorted(queried - exposed)


def test_the_dashboard_covers_what_on_call_needs():
    exprs = " ".join(dashboard_exprs())
    for needed in ("sessionwatch_events_received_total", "sessionwatch_events_dead_lettered_total",
                   "sessionwatch_findings_total", "sessionwatch_revocations_total",
                   "histogram_quantile(0.5, sum by (le) (rate(sessionwatch_event_to_decision_seconds",
                   "histogram_quantile(0.99, sum by (le) (rate(sessionwatch_event_to_decision_seconds",
                   "sessionwatch_consumer_lag_messages", "sessionwatch_sink_unavailable",
                   "sessionwatch_archive_rows_total", "sessionwatch_archive_insert_duration_seconds"):
        assert needed in exprs, needed
    uids = {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in p["targets"]}
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert uids == {d["uid"] for d in source["datasources"]}
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_scrapes_every_long_running_process():
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert set(jobs) == {"worker", "applier", "archiver", "console"}
    ports = {name: job["dns_sd_configs"][0]["port"] for name, job in jobs.items()}
    assert len(set(ports.values())) == 4  # one host can run them all without a clash
    for name, job in jobs.items():
        assert job["dns_sd_configs"][0]["names"] == [name]  # the compose service name


def test_lag_is_the_fetched_high_watermark_minus_the_position():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, process_collector=False)
    metrics.set_lag("sessionwatch.events", 2, high_watermark=1_000, position=940, group="sw")
    metrics.set_lag("sessionwatch.events", 3, high_watermark=10, position=-1001, group="sw")
    labels = {"group": "sw", "topic": "sessionwatch.events"}
    assert registry.get_sample_value("sessionwatch_consumer_lag_messages",
                                     {**labels, "partition": "2"}) == 60
    assert registry.get_sample_value("sessionwatch_consumer_lag_messages",
                                     {**labels, "partition": "3"}) == 0  # no position yet
    metrics.forget_partition("sessionwatch.events", 2, group="sw")
    metrics.forget_partition("sessionwatch.events", 9, group="sw")  # never had one: fine
    assert registry.get_sample_value("sessionwatch_consumer_lag_messages",
                                     {**labels, "partition": "2"}) is None


def test_a_flood_of_made_up_reasons_is_capped():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, process_collector=False)
    for i in range(MAX_LABEL_VALUES + 50):
        metrics.dead_lettered("session", f"made-up-{i}")
    reasons = {s.labels["reason"] for m in registry.collect() for s in m.samples
               if s.name == "sessionwatch_events_dead_lettered_total"}
    assert len(reasons) <= MAX_LABEL_VALUES + 1 and OTHER in reasons
    assert registry.get_sample_value("sessionwatch_events_dead_lettered_total",
                                     {"stage": "session", "reason": OTHER}) >= 50


def test_applier_and_archiver_metrics():
    registry = CollectorRegistry()
    applier = ApplierMetrics(registry, process_collector=False)
    applier.delivered("redis", delay_s=0.004)
    applier.delivered("redis", "unchanged")
    applier.retried("webhook")
    applier.set_unavailable("webhook", True)
    get = registry.get_sample_value
    assert get("sessionwatch_sink_deliveries_total", {"sink": "redis", "outcome": "delivered"}) == 1
    assert get("sessionwatch_sink_deliveries_total", {"sink": "redis", "outcome": "unchanged"}) == 1
    assert get("sessionwatch_sink_retries_total", {"sink": "webhook"}) == 1
    assert get("sessionwatch_sink_unavailable", {"sink": "webhook"}) == 1
    assert get("sessionwatch_sink_delivery_delay_seconds_count", {"sink": "redis"}) == 1
    applier.set_unavailable("webhook", False)
    assert get("sessionwatch_sink_unavailable", {"sink": "webhook"}) == 0

    registry = CollectorRegistry()
    archiver = ArchiverMetrics(registry, process_collector=False)
    archiver.inserted("events", 5000, 0.02)
    archiver.insert_failed("findings")
    assert registry.get_sample_value("sessionwatch_archive_rows_total", {"table": "events"}) == 5000
    assert registry.get_sample_value("sessionwatch_archive_insert_duration_seconds_bucket",
                                     {"table": "events", "le": "0.025"}) == 1
    assert registry.get_sample_value("sessionwatch_archive_insert_failures_total",
                                     {"table": "findings"}) == 1


def test_console_requests_are_labelled_by_route_not_path():
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def session_page(request):
        return PlainTextResponse(request.path_params["session"])

    registry = CollectorRegistry()
    metrics = ConsoleMetrics(registry, process_collector=False)
    app = Starlette(routes=[Route("/sessions/{session}", session_page)],
                    middleware=[Middleware(RequestMetricsMiddleware, metrics=metrics)])
    client = TestClient(app)
    for session in ("s-1", "s-2", "s-3"):
        assert client.get(f"/sessions/{session}").status_code == 200
    assert client.get("/nope").status_code == 404
    get = registry.get_sample_value
    assert get("sessionwatch_console_requests_total",
               {"route": "session_page", "method": "GET", "status": "200"}) == 3
    assert get("sessionwatch_console_requests_total",
               {"route": "unmatched", "method": "GET", "status": "404"}) == 1
    assert get("sessionwatch_console_request_duration_seconds_count", {"route": "session_page"}) == 3
    assert not any("s-1" in s.labels.values() for m in registry.collect() for s in m.samples)
