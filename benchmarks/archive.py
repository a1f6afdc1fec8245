"""The archive path, Kafka -> ClickHouse: rows/s the archiver sustains on a backlog.

    python -m benchmarks.archive [--events 300000] [--backend server|chdb] [--profile]

Starts the embedded broker, fills `sessionwatch.events` with contract events (librdkafka, so
filling is not what is measured), then runs the archiver in this process (storage/archiver.py,
with the worker's enrichment as `sessionwatch archive` wires it) until its group has committed
the end of every partition. `server` starts a throwaway Debian clickhouse-server 18.16 with the
tests' fixture class; `chdb` archives into a temporary chDB directory. Prints rows/s for the
whole path and, with --profile, where the archiver's time went (cProfile, top functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path


def _fill(bootstrap: str, n: int) -> float:
    from confluent_kafka import Producer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from factories import make_event

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 1000000})
    t0 = time.perf_counter()
    for i in range(n):
        event = make_event("session.activity", session=f"s{i % 5000}", user=f"u{i % 2000}",
                           ip=f"73.162.{i % 200}.{i % 250 + 1}", at=i * 0.01, id=f"e{i}")
        producer.produce("sessionwatch.events", json.dumps(event).encode(),
                         key=event["session"].encode())
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)
    return n / (time.perf_counter() - t0)


async def _archive(bootstrap: str, backend: object, n: int) -> float:
    from sessionwatch.archive import enricher
    from sessionwatch.demo import wait_group_caught_up
    from storage.archiver import TABLES, ArchiveOptions, Archiver
    from streams.settings import Settings

    archiver = Archiver(ArchiveOptions(bootstrap=bootstrap, group="bench-archive",
                                       report_every_s=5.0),
                        backend, enricher(Settings()))  # type: ignore[arg-type]
    task = asyncio.create_task(archiver.run())
    await archiver.ready.wait()
    t0 = time.perf_counter()
    done = await asyncio.to_thread(wait_group_caught_up, bootstrap, "bench-archive",
                                   list(TABLES), 600.0)
    elapsed = time.perf_counter() - t0
    archiver.stop()
    await task
    if not done:
        raise SystemExit("the archiver did not catch up within 600 s")
    return n / elapsed


def _sustained(bootstrap: str, group: str, topics: list[str], events: int) -> float:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or {0})]
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            committed = admin.list_group_offsets({group: parts}).get(group, {})
            done = sum(o.offset for o in committed.values() if o.offset > 0)
            samples.append((time.monotonic(), done))
            if done >= events:
                break
            time.sleep(0.25)
    finally:
        admin.close()
        probe.close()
    low = next(s for s in samples if s[1] >= 0.2 * events)
    high = next(s for s in samples if s[1] >= 0.8 * events)
    return (high[1] - low[1]) / (high[0] - low[0])


def _archive_processes(bootstrap: str, url: str | None, chdb_dir: str, n: int, events: int,
                       work: Path) -> float:
    from sessionwatch.processes import ArchiverProcess
    from storage.archiver import TABLES

    if url is None and n > 1:
        raise SystemExit("--processes > 1 needs --backend server (chDB: one process per dir)")
    where = {"clickhouse": url} if url else {"chdb_dir": chdb_dir}
    procs = [ArchiverProcess(bootstrap, work / f"archive-{i}.log", partitions=4,
                             archive_group="bench-archive-procs", archive_batch_rows="10000",
                             **where) for i in range(n)]
    try:
        # The processes start one after another and begin on the backlog at once, so time the
        # middle of the run: committed offsets sampled every 0.25 s, rate from 20 % to 80 %.
        return _sustained(bootstrap, "bench-archive-procs", list(TABLES), events)
    finally:
        for proc in procs:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--backend", choices=("server", "chdb"), default="server")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--processes", type=int, default=0,
                        help="run N `sessionwatch archive` processes in one group instead of "
                             "the archiver in this process (scale-out)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s")
    from sessionwatch.broker import EmbeddedBroker
    from storage.clickhouse import ChdbBackend, ServerBackend
    from streams.topics import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    server = None
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        ensure_topics([broker.bootstrap], 4, 1, app_id="bench")
        fill_rate = _fill(broker.bootstrap, args.events)
        if args.backend == "server":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
            from conftest import ClickHouseServer

            (work / "clickhouse").mkdir()
            server = ClickHouseServer(work / "clickhouse").start()
            backend = ServerBackend(server.url)
        else:
            backend = ChdbBackend(str(work / "chdb"))
        profiler = cProfile.Profile() if args.profile else None
        try:
            if args.processes:
                backend.migrate()
                backend.close()
                rate = _archive_processes(broker.bootstrap, server.url if server else None,
                                          str(work / "chdb"), args.processes, args.events, work)
            else:
                if profiler:
                    profiler.enable()
                rate = asyncio.run(_archive(broker.bootstrap, backend, args.events))
                if profiler:
                    profiler.disable()
        finally:
            if server is not None:
                server.stop()
    print(f"\nfilled {args.events} events at {fill_rate:,.0f}/s; archived Kafka -> "
          f"{args.backend} at {rate:,.0f} rows/s (decode, validate, enrich, columnar insert, "
          f"commit)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
