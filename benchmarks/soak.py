"""Soak: the whole pipeline at a fixed rate for N minutes, a worker killed and restarted halfway.

    python -m benchmarks.soak --minutes 20 [--rate 1000] [--apps 3] [--workers 2] [--partitions 4]
    python -m benchmarks.soak --state [--sessions 1000000] [--sources 20000]

Embedded broker (Tansu), `sessionwatch worker` x W (RocksDB store), `apply` (a real Redis),
`archive` (Debian's clickhouse-server as a user process) and A app processes sending simulated
users with the SDK. Prints throughput, event->revocation and event->Redis-key latency, RSS per
process per minute with its slope once warm, lag; then checks that every event is archived
exactly once and every injected hijack is enforced (its Redis key exists). Exit 1 if a check
fails. `--state` measures memory per session and per source instead (benchmarks/_soak_state.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._soak_apps import AppJob, read_records, send_times, start_apps
from benchmarks._soak_checks import TENANT, archive_counts, missing_from_archive, redis_enforced
from benchmarks._soak_watch import (
    KeyWatcher,
    RevocationReader,
    Sampler,
    Seen,
    Watched,
    pct,
    per_minute,
    processed_rate,
    slopes,
)

APP_ID = "soak"
APPLY_GROUP = "soak-apply"
APPLY_REDIS_GROUP = f"{APPLY_GROUP}-redis"  # the applier commits per sink: <group>-<sink>
ARCHIVE_GROUP = "soak-archive"


# -- services --------------------------------------------------------------------------------

@dataclass
class Services:
    tmp: Path
    broker: Any
    redis: Any
    clickhouse: Any
    workers: list[Any] = field(default_factory=list)
    worker_ports: list[int] = field(default_factory=list)
    applier: Any = None
    archiver: Any = None
    ports: dict[str, int] = field(default_factory=dict)

    def worker(self, i: int) -> Any:
        from sessionwatch.broker import free_port
        from sessionwatch.processes import WorkerProcess

        if len(self.worker_ports) <= i:
            self.worker_ports.append(free_port())
        n = sum(1 for p in self.tmp.glob(f"worker-{i}*.log"))
        return WorkerProcess(
            self.broker.bootstrap, self.tmp / f"worker-{i}{'-' + str(n) if n else ''}.log",
            app_id=APP_ID, partitions=self.partitions, store="rocksdb",
            data_dir=str(self.tmp / f"state-{i}"), session_ttl_s=str(self.session_ttl_s),
            extra_args=["--metrics-port", str(self.worker_ports[i])])

    partitions: int = 4
    session_ttl_s: float = 120.0

    def stop(self) -> None:
        for proc in [*self.workers, self.applier, self.archiver]:
            if proc is not None:
                proc.stop()
        for svc in (self.clickhouse, self.redis, self.broker):
            if svc is not None:
                svc.stop()


def start_services(tmp: Path, args: argparse.Namespace) -> Services:
    # The integration fixtures' servers, reused as they are (they call pytest.fail on a failed
    # start, which raises here like any exception).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sessionwatch.broker import EmbeddedBroker, free_port
    from sessionwatch.processes import ApplierProcess, ArchiverProcess
    from streams.topics import ensure_topics
    from tests.integration.conftest import ClickHouseServer, RedisServer

    (tmp / "clickhouse").mkdir()
    svc = Services(tmp, EmbeddedBroker(log_path=tmp / "tansu.log").start(),
                   RedisServer(tmp).start(), None, partitions=args.partitions,
                   session_ttl_s=args.session_ttl)
    try:
        svc.clickhouse = ClickHouseServer(tmp / "clickhouse").start()
        ensure_topics([svc.broker.bootstrap], args.partitions, app_id=APP_ID)
        svc.workers = [svc.worker(i) for i in range(args.workers)]
        svc.ports = {"applier": free_port(), "archiver": free_port()}
        common = {"partitions": args.partitions, "app_id": APP_ID}
        svc.applier = ApplierProcess(
            svc.broker.bootstrap, tmp / "applier.log", extra_args=["--metrics-port",
                                                                   str(svc.ports["applier"])],
            redis=svc.redis.url, apply_group=APPLY_GROUP, **common)
        svc.archiver = ArchiverProcess(
            svc.broker.bootstrap, tmp / "archiver.log", extra_args=["--metrics-port",
                                                                    str(svc.ports["archiver"])],
            clickhouse=svc.clickhouse.url, archive_group=ARCHIVE_GROUP, **common)
        for proc in [*svc.workers, svc.applier, svc.archiver]:
            proc.wait_ready(120)
    except BaseException:
        svc.stop()
        raise
    return svc


def watched(svc: Services) -> list[Watched]:
    def alive(get: Any) -> Any:
        return lambda: get().proc.pid if get().proc.poll() is None else None

    out = [Watched(f"worker-{i}", alive(lambda i=i: svc.workers[i]), svc.worker_ports[i])
           for i in range(len(svc.workers))]
    out += [Watched("applier", alive(lambda: svc.applier), svc.ports["applier"]),
            Watched("archiver", alive(lambda: svc.archiver), svc.ports["archiver"]),
            # EmbeddedBroker keeps its Popen private; its pid is all the soak reads
            Watched("broker", lambda: svc.broker._proc.pid),
            Watched("clickhouse", lambda: svc.clickhouse.proc.pid),
            Watched("redis", lambda: svc.redis.proc.pid)]
    return out


@dataclass
class Outage:
    killed_at: float = float("nan")
    restarted_at: float = float("nan")
    ready_at: float = float("nan")
    recovered_at: float = float("nan")  # first sample after ready with the workers' lag <= 1 s


def recovered(samples: list[Any], ready_at: float, rate: float) -> float:
    for s in samples:
        lags = [v for k, v in s.lag.items() if k.startswith("worker") and v is not None]
        if s.t >= ready_at and lags and sum(lags) <= rate:
            return float(s.t)
    return float("nan")


def kill_and_restart(svc: Services, at_s: float, down_s: float, started: float,
                     outage: Outage) -> None:
    """SIGKILL worker 0 at `at_s`, start it again `down_s` later on the same RocksDB directory."""
    time.sleep(max(0.0, started + at_s - time.monotonic()))
    svc.workers[0].kill()
    outage.killed_at = time.monotonic() - started
    time.sleep(down_s)
    svc.workers[0] = svc.worker(0)
    outage.restarted_at = time.monotonic() - started
    svc.workers[0].wait_ready(180)
    outage.ready_at = time.monotonic() - started


# -- the run ---------------------------------------------------------------------------------

def run_soak(args: argparse.Namespace) -> int:
    from producers.contract import FINDINGS_TOPIC, REVOCATIONS_TOPIC
    from producers.revocation_keys import session_key
    from sessionwatch.demo import EVENTS_TOPIC, wait_caught_up, wait_group_caught_up

    # clickhouse-driver logs a traceback per refused connection while the server starts
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    # The children run on the soak's settings only (they inherit this environment).
    for name in [n for n in os.environ if n.startswith("SESSIONWATCH_")]:
        del os.environ[name]
    tmp = Path(tempfile.mkdtemp(prefix="sessionwatch-soak-"))
    duration = args.minutes * 60
    warm_s = args.warmup * 60 if args.warmup is not None else min(240.0, duration / 4)
    print(f"soak: {args.minutes} min at {args.rate:,.0f} events/s from {args.apps} apps; "
          f"{args.workers} worker(s) (rocksdb, session TTL {args.session_ttl:.0f} s), "
          f"{args.partitions} partitions; logs in {tmp}", flush=True)
    svc = start_services(tmp, args)
    threads: list[Any] = []
    try:
        seen = Seen()
        reader, keys = RevocationReader(svc.broker.bootstrap, seen), KeyWatcher(svc.redis.client(), seen)
        watch = watched(svc)
        started = time.monotonic()
        sampler = Sampler(watch, started, every_s=min(5.0, max(1.0, duration / 60)))
        outage = Outage()
        killer = threading.Thread(target=kill_and_restart, daemon=True,
                                  args=(svc, duration / 2, args.down, started, outage))
        paths = [tmp / f"app-{i}.txt" for i in range(args.apps)]
        jobs = [AppJob(i, args.apps, svc.broker.bootstrap, args.rate / args.apps, duration,
                       secrets.token_bytes(32), paths[i], args.seed) for i in range(args.apps)]
        threads = [reader, keys, sampler]
        for t in threads:
            t.start()
        apps = start_apps(jobs)
        for a in apps:
            watch.append(Watched(a.name, lambda a=a: a.pid if a.is_alive() else None))
        killer.start()
        for a in apps:
            a.join(duration + 120)
        sent_s = time.monotonic() - started
        killer.join(300)
        caught = {
            "worker": wait_caught_up(svc.broker.bootstrap, APP_ID, timeout_s=300),
            "applier": wait_group_caught_up(svc.broker.bootstrap, APPLY_REDIS_GROUP,
                                            [REVOCATIONS_TOPIC], 300),
            "archiver": wait_group_caught_up(svc.broker.bootstrap, ARCHIVE_GROUP,
                                             [EVENTS_TOPIC, FINDINGS_TOPIC, REVOCATIONS_TOPIC], 300),
        }
        drained_s = time.monotonic() - started - sent_s
        outage.recovered_at = recovered(sampler.samples, outage.ready_at, args.rate)
        time.sleep(1.0)  # the last keyspace notifications and revocations in flight to the readers
        for t in threads:
            t.stop_event.set()
        for t in threads:
            t.join(10)

        rec = read_records(paths)
        first: dict[str, tuple[float, dict]] = {}
        for at, rev in seen.revocations:
            first.setdefault(rev["id"], (at, rev))
        cause = {rev["events"][0] for _, rev in first.values() if rev.get("events")}
        hij_ids = {h.event_id for h in rec.hijacks}
        sent_at = send_times(paths, cause | hij_ids)
        wall0 = time.time() - (time.monotonic() - started)  # the soak's start, wall clock
        # Events sent from just before the kill until the restarted worker is ready wait for it
        # (or for the group to move its partitions): counted apart from the steady figures.
        out_lo = wall0 + outage.killed_at - 2.0
        out_hi = wall0 + (outage.recovered_at if outage.recovered_at == outage.recovered_at
                          else sent_s)  # never recovered: everything after the kill

        def steady(t: float) -> bool:
            return not out_lo <= t <= out_hi

        lat_all = [(at - sent_at[rev["events"][0]]) * 1000 for at, rev in first.values()
                   if rev.get("events") and rev["events"][0] in sent_at]
        lat_steady = [(at - sent_at[rev["events"][0]]) * 1000 for at, rev in first.values()
                      if rev.get("events") and rev["events"][0] in sent_at
                      and steady(sent_at[rev["events"][0]])]
        detectors: dict[str, int] = {}
        for _, rev in first.values():
            d = rev["reasons"][0]["detector"] if rev.get("reasons") else "?"
            detectors[d] = detectors.get(d, 0) + 1
        rev_by_session: dict[str, float] = {}
        for at, rev in first.values():
            if rev.get("session"):
                rev_by_session.setdefault(rev["session"], at)
        lat_hij = [(rev_by_session[h.session] - h.sent_at) * 1000 for h in rec.hijacks
                   if h.session in rev_by_session]
        lat_hij_steady = [(rev_by_session[h.session] - h.sent_at) * 1000 for h in rec.hijacks
                          if h.session in rev_by_session and steady(h.sent_at)]
        lat_key = [(seen.keys[k] - h.sent_at) * 1000 for h in rec.hijacks
                   if (k := session_key(TENANT, h.session)) in seen.keys]
        lat_key_steady = [(seen.keys[k] - h.sent_at) * 1000 for h in rec.hijacks
                          if (k := session_key(TENANT, h.session)) in seen.keys
                          and steady(h.sent_at)]
        by_session, by_user = redis_enforced(svc, rec.hijacks)
        events = archive_counts(svc, "events")
        revocations = archive_counts(svc, "revocations")
        exactly_once = (events["distinct_ids"] == rec.events == events["rows_final"]
                        and rec.dropped == rec.failed == 0)
        missing = ({} if events["distinct_ids"] == rec.events
                   else missing_from_archive(svc, paths))
        enforced = by_session + by_user == len(rec.hijacks)
        samples = sampler.samples
        names = [w.name for w in watch]
        lag_names = [w.name for w in watch if w.metrics_port]
        sent_min: dict[int, int] = {}
        for p in paths:
            with open(p) as f:
                for line in f:
                    if line.startswith("E "):
                        m = int((float(line.rsplit(" ", 1)[1]) - wall0) // 60)
                        sent_min[m] = sent_min.get(m, 0) + 1
        end_s = min(sent_s, samples[-1].t if samples else sent_s)
        win_a = slopes(samples, names, warm_s, outage.killed_at)
        win_b = slopes(samples, names, outage.ready_at + warm_s, end_s)
        result = {
            "minutes": args.minutes, "rate_target": args.rate, "apps": args.apps,
            "workers": args.workers, "partitions": args.partitions,
            "events_sent": rec.events, "sdk_delivered": rec.delivered, "sdk_dropped": rec.dropped,
            "sdk_failed": rec.failed, "send_rate": rec.events / rec.seconds if rec.seconds else 0,
            "worker_processed_rate": processed_rate([x for x in samples if x.t <= sent_s],
                                                    [n for n in lag_names if n.startswith("worker")]),
            "drain_s": drained_s, "caught_up": caught, "outage": vars(outage),
            "revocations": len(first), "revocations_by_detector": detectors,
            "event_to_revocation_ms": _q(lat_all), "event_to_revocation_steady_ms": _q(lat_steady),
            "hijacks": len(rec.hijacks), "hijacks_revoked_on_topic": len(lat_hij),
            "hijack_to_revocation_ms": _q(lat_hij), "hijack_to_redis_key_ms": _q(lat_key),
            "hijack_to_revocation_steady_ms": _q(lat_hij_steady),
            "hijack_to_redis_key_steady_ms": _q(lat_key_steady),
            "hijacks_enforced": {"session_key": by_session, "user_key_only": by_user},
            "archive_events": events, "archive_revocations": revocations,
            "revocation_ids_on_topic": len(first),
            "rss_slope_mib_per_min": {"warm_to_kill": win_a, "restart_to_end": win_b},
            "checks": {"archived_exactly_once": exactly_once, "hijacks_enforced": enforced},
            "missing": missing,
        }
        print_report(result, per_minute(samples, names, lag_names, sent_min), warm_s, end_s)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        return 0 if exactly_once and enforced and all(caught.values()) else 1
    finally:
        for t in threads:
            t.stop_event.set()
        svc.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _q(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "max": max(values) if values else float("nan")}


def print_report(r: dict[str, Any], table: str, warm_s: float, end_s: float) -> None:
    def q(d: dict[str, float]) -> str:
        return f"p50 {d['p50']:.0f} / p99 {d['p99']:.0f} / max {d['max']:.0f} ms (n={d['n']:,})"

    o = r["outage"]
    print(f"\nthroughput: {r['events_sent']:,} events sent at {r['send_rate']:,.0f}/s "
          f"(target {r['rate_target']:,.0f}); SDK delivered {r['sdk_delivered']:,}, dropped "
          f"{r['sdk_dropped']}, failed {r['sdk_failed']}; workers processed "
          f"{r['worker_processed_rate']:,.0f} events/s; drained {r['drain_s']:.1f} s after the "
          f"last send; caught up: {r['caught_up']}")
    print(f"worker-0 SIGKILLed at {o['killed_at']:.0f} s, restarted at {o['restarted_at']:.0f} s, "
          f"ready at {o['ready_at']:.0f} s, workers' lag back under 1 s of traffic at "
          f"{o['recovered_at']:.0f} s")
    print("latency, steady = sent outside [kill - 2 s, lag recovered]; all = every one:")
    for label, key in (("event -> revocation (every revocation, first delivery)", "event_to_revocation"),
                       ("hijack -> revocation on the topic", "hijack_to_revocation"),
                       ("hijack -> Redis key (keyspace notification)", "hijack_to_redis_key")):
        print(f"  {label}:\n    steady {q(r[key + '_steady_ms'])}\n    all    {q(r[key + '_ms'])}")
    print("revocations by first reason: " + ", ".join(
        f"{k} {v}" for k, v in sorted(r["revocations_by_detector"].items())))
    print("\nRSS (MiB, last sample of each minute) and largest consumer lag (messages) per minute:")
    print(table)
    for label, win in (("warm-up to the kill", "warm_to_kill"), ("restart+warm-up to the end",
                                                                  "restart_to_end")):
        s = r["rss_slope_mib_per_min"][win]
        print(f"RSS slope {label} (MiB/min): "
              + (", ".join(f"{k} {v:+.2f}" for k, v in s.items()) or "window too short"))
    print(f"(warm-up {warm_s:.0f} s; sending ended at {end_s:.0f} s)")
    e, v = r["archive_events"], r["archive_revocations"]
    h = r["hijacks_enforced"]
    print(f"\narchive events: {e['distinct_ids']:,} distinct ids for {r['events_sent']:,} sent; "
          f"rows FINAL {e['rows_final']:,}, rows {e['rows']:,}"
          + (f"; {m['count']} missing, {m['in_topic']} of them in the events topic, e.g. "
             f"{m['sample']}" if (m := r["missing"]) else ""))
    print(f"archive revocations: {v['distinct_ids']:,} distinct ids ({r['revocation_ids_on_topic']:,}"
          f" on the topic); rows FINAL {v['rows_final']:,}, rows {v['rows']:,}")
    print(f"injected hijacks: {r['hijacks']:,}; revoked on the topic {r['hijacks_revoked_on_topic']:,};"
          f" Redis session key present {h['session_key']:,}, user key only {h['user_key_only']:,}")
    for name, ok in r["checks"].items():
        print(f"check {name}: {'PASS' if ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s, all apps together")
    parser.add_argument("--apps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--session-ttl", type=float, default=120.0,
                        help="the workers' session_ttl_s: state ages out, so RSS can plateau")
    parser.add_argument("--warmup", type=float, default=None,
                        help="minutes before RSS counts as warm (default min(4, minutes/4))")
    parser.add_argument("--down", type=float, default=5.0, help="seconds the killed worker stays down")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    parser.add_argument("--state", action="store_true",
                        help="measure memory per session and per source instead")
    parser.add_argument("--sessions", type=int, default=200_000, help="--state: sessions")
    parser.add_argument("--sources", type=int, default=20_000, help="--state: distinct sources")
    args = parser.parse_args()
    if args.state:
        from benchmarks._soak_state import run_state

        sys.exit(run_state(args.sessions, args.sources, args.partitions, args.json))
    sys.exit(run_soak(args))


if __name__ == "__main__":
    main()
