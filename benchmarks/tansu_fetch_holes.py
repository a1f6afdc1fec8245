"""Reproduce the embedded broker's Fetch holes (Tansu 0.6), and check the guard that reads them.

    python -m benchmarks.tansu_fetch_holes [--seconds 150] [--rate 900]

Three producer processes (kafka-python, as the SDK: acks=1, linger 5 ms) write to both
partitions of a fresh topic at `--rate` records/s each, while three consumers read its tail:
aiokafka as it comes, librdkafka as it comes, and aiokafka through the hole guard the applier
and archiver use (storage/consuming.contiguous). Each prints the holes it met - offsets missing
between two records it was handed - and a fresh consumer then reads the whole topic again to
show whether the missing records were in the log after all.

Seen here (2026-12-01, 2 shared cores, 150 s at 3 x 900/s, ~200k records): aiokafka skipped
1-3 records in 3-4 holes per run, librdkafka 2 holes per run, the guarded reader none (3 holes
read again, each there at the first re-read); the re-read found every skipped record. The Fetch
response around a hole (logged by patching aiokafka) held batches [..,28129-28130] then
[28134-28136, ..]: the batch 28131-28133 was not stored yet while the one after it was.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from sessionwatch.broker import EmbeddedBroker

TOPIC, PARTITIONS, PRODUCERS = "holes", 2, 3


def produce(bootstrap: str, n: int, seconds: float, rate: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    started, i = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        producer.send(TOPIC, f"{n}:{i}".encode(), partition=i % PARTITIONS)
        i += 1
        time.sleep(1 / rate)
    producer.flush()


def holes_in(seen: dict[int, list[int]]) -> list[tuple[int, int, int]]:
    """(partition, first missing, next seen) for each hole in the offsets handed over."""
    out = []
    for partition, offsets in seen.items():
        for a, b in zip(offsets, offsets[1:], strict=False):
            if b > a + 1:
                out.append((partition, a + 1, b))
    return out


def aiokafka_tail(bootstrap: str, guarded: bool, idle_s: float) -> dict[int, list[int]]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as TP

    from storage.consuming import contiguous
    from storage.offset_holes import OffsetHoles

    async def run() -> dict[int, list[int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=50)
        await consumer.start()
        tps = [TP(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        holes, seen = OffsetHoles(), {p: [] for p in range(PARTITIONS)}
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            records = await consumer.getmany(timeout_ms=200, max_records=10_000)
            if guarded:
                records = contiguous(consumer, holes, records)
            for tp, messages in records.items():
                last = time.monotonic()
                seen[tp.partition].extend(m.offset for m in messages)
        await consumer.stop()
        if guarded:
            print(f"  guard: {holes.stats.reread} re-reads, {holes.stats.filled} holes filled, "
                  f"{holes.stats.accepted} offsets given up", flush=True)
        return seen

    return asyncio.run(run())


def librdkafka_tail(bootstrap: str, idle_s: float) -> dict[int, list[int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "holes",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        for m in consumer.consume(10_000, 0.2):
            if m.error() is None:
                last = time.monotonic()
                seen[m.partition()].append(m.offset())
    consumer.close()
    return seen


def report(name: str, seen: dict[int, list[int]], everything: set[tuple[int, int]]) -> None:
    got = {(p, o) for p, offsets in seen.items() for o in offsets}
    holes = holes_in(seen)
    missing = everything - got
    print(f"{name:<22} {len(got):>8} records, {len(holes)} holes {holes[:4]}, "
          f"{len(missing)} missing from what the log holds", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--rate", type=int, default=900, help="records/s per producer")
    args = parser.parse_args()
    from kafka.admin import KafkaAdminClient, NewTopic

    with EmbeddedBroker() as broker:
        KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics(
            [NewTopic(TOPIC, PARTITIONS, 1)])
        producers = [mp.Process(target=produce, args=(broker.bootstrap, n, args.seconds,
                                                      args.rate)) for n in range(PRODUCERS)]
        for p in producers:
            p.start()
        with mp.Pool(3) as pool:
            tails: dict[str, Any] = {
                "aiokafka": pool.apply_async(aiokafka_tail, (broker.bootstrap, False, 10.0)),
                "librdkafka": pool.apply_async(librdkafka_tail, (broker.bootstrap, 10.0)),
                "aiokafka + hole guard": pool.apply_async(aiokafka_tail,
                                                          (broker.bootstrap, True, 10.0)),
            }
            for p in producers:
                p.join()
            results = {name: r.get() for name, r in tails.items()}
        again = aiokafka_tail(broker.bootstrap, False, 5.0)
        everything = {(p, o) for p, offsets in again.items() for o in offsets}
        print(f"read again afterwards: {len(everything)} records, "
              f"{len(holes_in(again))} holes")
        for name, seen in results.items():
            report(name, seen, everything)


if __name__ == "__main__":
    main()
