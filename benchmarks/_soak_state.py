"""`python -m benchmarks.soak --state`: the worker's memory per active session and per tracked
source, RocksDB store, one worker (goal: 1 M active sessions within 1 GiB RSS).

Fills, each on a fresh embedded broker, measured once the worker has caught up; logins (two
sessions per user) from 250 addresses of one /24 (the source stage tracks almost nothing), or
each from its own address in its own /24. A small fill is the baseline, not an idle worker: the
RocksDB memtables and caches are allocated on the first writes, and belong to no one session.
Per session = (`sessions` fill - `BASE` fill) / (sessions - BASE); per source = (`sources`
sessions from their own sources - as many from 250 addresses) / sources. The source windows are
in memory and capped per worker (LRUs of streams/source_state.py): their total is bounded.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._soak_watch import rss_mib, scrape
from streams.state_size import STATE_EVERY_S

APP_ID = "soakstate"
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")
BASE = 2_000
STATE_METRICS = ("sessionwatch_state_entries", "sessionwatch_state_bytes")


def few_sources(i: int) -> str:
    return f"73.12.34.{i % 250 + 1}"


def own_source(i: int) -> str:
    """A distinct address in a distinct /24 for every i < 2**16."""
    return f"73.{(i >> 8) & 255}.{i & 255}.7"


def produce_logins(bootstrap: str, n: int, ip_of: Callable[[int], str]) -> float:
    """`n` logins, one session each, two sessions per user, 50 ms of event time apart (1 M of
    them span 14 h, inside the 24 h session TTL); returns the seconds producing took."""
    import secrets

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
                         "enable.idempotence": False})
    base = datetime.now(UTC) - timedelta(seconds=0.05 * n + 3600)
    began = time.monotonic()
    for i in range(n):
        session = secrets.token_hex(32)
        event = {"schema": "sessionwatch.event/1", "id": f"login-{i}",
                 "type": "session.authenticated",
                 "time": (base + timedelta(milliseconds=50 * i)).isoformat().replace("+00:00", "Z"),
                 "session": session, "user": f"user{i // 2:07d}@example.com", "ip": ip_of(i),
                 "user_agent": UA}
        while True:
            try:
                producer.produce("sessionwatch.events", json.dumps(event).encode(),
                                 key=session.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(300)
    return time.monotonic() - began


def fill(tmp: Path, name: str, partitions: int, n: int, ip_of: Callable[[int], str] | None
         ) -> dict[str, Any]:
    """One worker on a fresh broker fed `n` logins (none if `ip_of` is None): its RSS when done."""
    from sessionwatch.broker import EmbeddedBroker, free_port
    from sessionwatch.processes import WorkerProcess
    from streams.log_end import wait_caught_up
    from streams.routing import by_source_topic, by_user_topic
    from streams.topics import ensure_topics

    port = free_port()
    with EmbeddedBroker(log_path=tmp / f"tansu-{name}.log") as broker:
        ensure_topics([broker.bootstrap], partitions, app_id=APP_ID)
        out: dict[str, Any] = {"events": n}
        if ip_of is not None:
            out["produce_s"] = round(produce_logins(broker.bootstrap, n, ip_of), 1)
        worker = WorkerProcess(broker.bootstrap, tmp / f"worker-{name}.log", app_id=APP_ID,
                               partitions=partitions, store="rocksdb",
                               data_dir=str(tmp / f"state-{name}"),
                               extra_args=["--metrics-port", str(port)])
        try:
            began = time.monotonic()
            worker.wait_ready(600)
            topics = ["sessionwatch.events", by_user_topic(APP_ID), by_source_topic(APP_ID)]
            out["caught_up"] = wait_caught_up(broker.bootstrap, APP_ID, topics, timeout_s=3600,
                                              settle_s=2)
            out["process_s"] = round(time.monotonic() - began, 1)
            # A quiet moment: the last commit and checkpoint are done, and the state gauges were
            # read again since (every STATE_EVERY_S).
            time.sleep(STATE_EVERY_S + 2)
            out["rss_mib"] = rss_mib(worker.proc.pid)
            out.update(scrape(port, STATE_METRICS) or {})
        finally:
            worker.stop()
    shutil.rmtree(tmp / f"state-{name}", ignore_errors=True)
    print(f"state: {name}: {json.dumps(out)}", flush=True)
    return out


def run_state(sessions: int, sources: int, partitions: int, json_path: Path | None) -> int:
    if sources > 2**16:
        raise SystemExit("--sources: at most 65,536 (one /24 each under 73.0.0.0/8)")
    if sessions <= BASE:
        raise SystemExit(f"--sessions: more than the {BASE:,} of the baseline fill")
    tmp = Path(tempfile.mkdtemp(prefix="sessionwatch-soak-state-"))
    try:
        idle = fill(tmp, "idle", partitions, 0, None)
        base = fill(tmp, "base", partitions, BASE, few_sources)
        many = fill(tmp, "sessions", partitions, sessions, few_sources)
        narrow = fill(tmp, "narrow", partitions, sources, few_sources)
        wide = fill(tmp, "sources", partitions, sources, own_source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mib = 2**20
    per_session = (many["rss_mib"] - base["rss_mib"]) * mib / (sessions - BASE)
    per_source = (wide["rss_mib"] - narrow["rss_mib"]) * mib / sources
    projected = base["rss_mib"] + (1_000_000 - BASE) * per_session / mib
    result = {"idle": idle, "base_fill": base, "sessions_fill": many, "narrow_fill": narrow,
              "sources_fill": wide, "per_session_bytes": round(per_session),
              "per_source_bytes": round(per_source), "projected_1m_sessions_mib": round(projected)}
    print(f"\nworker RSS, RocksDB store, {partitions} partitions: idle {idle['rss_mib']:.0f} MiB; "
          f"{BASE:,} sessions {base['rss_mib']:.0f} MiB; {sessions:,} sessions "
          f"{many['rss_mib']:.0f} MiB (250 addresses); {sources:,} sessions from 250 addresses "
          f"{narrow['rss_mib']:.0f} MiB, each from its own address and /24 {wide['rss_mib']:.0f} MiB")
    print(f"per active session: {per_session:,.0f} bytes (session + half a user, RocksDB buffers "
          f"included); per tracked source (an address and its /24): {per_source:,.0f} bytes")
    how = "measured" if sessions == 1_000_000 else "projected linearly from this fill"
    print(f"1,000,000 sessions: ~{projected:,.0f} MiB ({how}; "
          f"{'within' if projected <= 1024 else 'over'} the 1 GiB goal)")
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))
    return 0 if all(f.get("caught_up", True) for f in (idle, base, many, narrow, wide)) else 1
