"""Reproduce the embedded broker's ListOffsets behaviour in a few lines (Tansu 0.6).

    python -m benchmarks.tansu_list_offsets

Produces 20 records in two batches of 10 into a fresh topic, then prints what ListOffsets says
the end is (librdkafka `get_watermark_offsets`, aiokafka `end_offsets`), what a fetch from inside
the second batch returns, and the high watermark that fetch response carried. Seen here
(2026-12-01): ListOffsets 11 and 11, fetched offsets 12..19, fetched high watermark 20, and
`streams.log_end.LogEnds` 20.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sessionwatch.broker import EmbeddedBroker
from streams.log_end import LogEnds


def main() -> None:
    with EmbeddedBroker() as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("t", 1, 1)])["t"].result()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 100})
        for batch in range(2):
            for i in range(10):
                producer.produce("t", f"{batch}-{i}".encode())
            producer.flush()
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe",
                             "enable.auto.commit": False})
        tp = TopicPartition("t", 0)
        print("ListOffsets, librdkafka get_watermark_offsets:",
              consumer.get_watermark_offsets(tp, timeout=5))
        consumer.assign([TopicPartition("t", 0, 12)])
        print("fetched from offset 12:", [m.offset() for m in consumer.consume(100, timeout=3)])
        print("high watermark of that fetch response:",
              consumer.get_watermark_offsets(tp, cached=True))
        consumer.close()

        async def aiokafka_end() -> None:
            import aiokafka

            probe = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
            await probe.start()
            try:
                atp = aiokafka.TopicPartition("t", 0)
                print("ListOffsets, aiokafka end_offsets:", (await probe.end_offsets([atp]))[atp])
            finally:
                await probe.stop()

        asyncio.run(aiokafka_end())
        with LogEnds({"bootstrap.servers": broker.bootstrap}) as ends:
            print("streams.log_end.LogEnds:", ends.watermarks("t", 0))


if __name__ == "__main__":
    main()
