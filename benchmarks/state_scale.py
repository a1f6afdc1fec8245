"""State at scale: memory per active session, and how long a restart takes to recover it.

    python -m benchmarks.state_scale [--sessions 1000000] [--partitions 4] [--store rocksdb]

Fills the embedded broker with one login per session (two sessions per user, so the user stage
holds state too), lets one worker process take them all, and reports its resident memory (RSS,
from /proc) against a worker that processed none. Then restarts it three ways and times each
from process start to "ready" (the log line written once every assigned partition's state is
recovered) and to the revocation of a hijack of a session from before the restart:
- warm: SIGTERM, the same data directory (RocksDB opens, Quix checks it against the changelog);
- crash: SIGKILL, the same data directory;
- cold: a new, empty data directory (everything replayed from the changelog topics).
With `--store memory` only the cold path exists (memory stores always replay their changelog).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def produce_logins(bootstrap: str, n: int) -> tuple[list[str], float]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
                         "enable.idempotence": False})
    # One login every 50 ms of event time: 1M sessions span 14 h, inside the 24 h session TTL.
    base = datetime.now(UTC) - timedelta(seconds=0.05 * n + 3600)
    sample: list[str] = []
    began = time.monotonic()
    for i in range(n):
        session = secrets.token_hex(32)
        if i % (n // 50 or 1) == 0:
            sample.append(session)
        event = {"schema": "sessionwatch.event/1", "id": f"login-{i}",
                 "type": "session.authenticated",
                 "time": (base + timedelta(milliseconds=50 * i)).isoformat().replace("+00:00", "Z"),
                 "session": session, "user": f"user{i // 2:07d}@example.com",
                 "ip": f"73.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}",
                 "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                               "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}
        while True:
            try:
                producer.produce("sessionwatch.events", json.dumps(event).encode(),
                                 key=session.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return sample, time.monotonic() - began


def hijack(bootstrap: str, sessions: list[str]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    at = (datetime.now(UTC) - timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    for s in sessions:
        event = {"schema": "sessionwatch.event/1", "id": f"hijack-{secrets.token_hex(8)}",
                 "type": "session.activity", "time": at, "session": s, "ip": "167.99.10.10",
                 "user_agent": "curl/8.5.0"}
        producer.produce("sessionwatch.events", json.dumps(event).encode(), key=s.encode())
    producer.flush(10)


def start_worker(bootstrap: str, logs: Path, name: str, partitions: int, store: str,
                 data_dir: Path) -> Any:
    from sessionwatch.processes import WorkerProcess

    return WorkerProcess(bootstrap, logs / f"{name}.log", app_id="scale", partitions=partitions,
                         store=store, data_dir=str(data_dir))


def restart(bootstrap: str, logs: Path, name: str, partitions: int, store: str, data_dir: Path,
            sample: list[str]) -> dict[str, float]:
    """Start a worker, time it to ready and to the revocation of `sample`'s hijacks."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{name}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    meta = consumer.list_topics("sessionwatch.revocations", timeout=10)
    consumer.assign([TopicPartition("sessionwatch.revocations", p, OFFSET_END)
                     for p in meta.topics["sessionwatch.revocations"].partitions])
    consumer.consume(1, timeout=1.0)
    began = time.monotonic()
    worker = start_worker(bootstrap, logs, name, partitions, store, data_dir)
    worker.wait_ready(timeout_s=1800)
    ready_s = time.monotonic() - began
    hijack(bootstrap, sample)
    wanted, seen = set(sample), set()
    deadline = time.monotonic() + 300
    while not wanted <= seen and time.monotonic() < deadline:
        for m in consumer.consume(500, timeout=0.2):
            if m.error() is None:
                seen.add(json.loads(m.value()).get("session"))
    revoked_s = time.monotonic() - began
    consumer.close()
    result = {"ready_s": round(ready_s, 1), "hijacks_revoked_s": round(revoked_s, 1),
              "hijacks_revoked": len(wanted & seen), "hijacks": len(wanted),
              "rss_mib": round(rss_mib(worker.proc.pid), 0)}
    worker.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from sessionwatch.broker import EmbeddedBroker
    from streams.log_end import wait_caught_up
    from streams.routing import by_source_topic, by_user_topic
    from streams.topics import ensure_topics

    tmp = Path(tempfile.mkdtemp(prefix="sessionwatch-scale-"))
    out: dict[str, Any] = {"sessions": args.sessions, "partitions": args.partitions,
                           "store": args.store}
    try:
        with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
            ensure_topics([broker.bootstrap], args.partitions, app_id="scale")
            idle = start_worker(broker.bootstrap, tmp, "idle", args.partitions, args.store,
                                tmp / "idle-state")
            idle.wait_ready()
            time.sleep(2)
            out["rss_idle_mib"] = round(rss_mib(idle.proc.pid), 0)
            idle.stop()
            shutil.rmtree(tmp / "idle-state", ignore_errors=True)

            sample, produce_s = produce_logins(broker.bootstrap, args.sessions)
            out["produce_s"] = round(produce_s, 1)
            disk = tmp / "state-1"
            first = start_worker(broker.bootstrap, tmp, "first", args.partitions, args.store, disk)
            began = time.monotonic()
            first.wait_ready()
            topics = ["sessionwatch.events", by_user_topic("scale"), by_source_topic("scale")]
            assert wait_caught_up(broker.bootstrap, "scale", topics, timeout_s=1800, settle_s=2)
            out["process_s"] = round(time.monotonic() - began, 1)
            out["rss_full_mib"] = round(rss_mib(first.proc.pid), 0)
            out["per_session_bytes"] = round(
                (out["rss_full_mib"] - out["rss_idle_mib"]) * 1024 * 1024 / args.sessions)
            out["disk_mib"] = round(sum(f.stat().st_size for f in disk.rglob("*")
                                        if f.is_file()) / 2**20, 0)
            print(json.dumps(out), flush=True)
            if args.store == "rocksdb":
                first.stop()
                out["warm"] = restart(broker.bootstrap, tmp, "warm", args.partitions,
                                      args.store, disk, sample[:20])
                print("warm", out["warm"], flush=True)
                crash = start_worker(broker.bootstrap, tmp, "crash-before", args.partitions,
                                     args.store, disk)
                crash.wait_ready()
                crash.kill()
                out["crash"] = restart(broker.bootstrap, tmp, "crash", args.partitions,
                                       args.store, disk, sample[20:35])
                print("crash", out["crash"], flush=True)
            else:
                first.stop()
            out["cold"] = restart(broker.bootstrap, tmp, "cold", args.partitions, args.store,
                                  tmp / "state-2", sample[35:50])
            print("cold", out["cold"], flush=True)
    finally:
        print(json.dumps(out, indent=1))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        if not os.environ.get("SESSIONWATCH_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
