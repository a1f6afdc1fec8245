"""faust with a tuned consumer: a short fetch wait (latency) and offset commits that wait for the
agents' sends (throughput without losing at-least-once).

Removed in issue 3: a fast path that skipped faust's `wait_first(deliver, suspend_flow.wait())`
per message (2.4x less CPU in a bare agent, 3.2k -> 3.8k events/s in the worker), because a
rebalance cannot interrupt a delivery blocked in it. It was the first suspect when the failover
test began to stall (4 of 6 runs); the stall persisted without it and was a committed offset
beyond the log end (see `seek_to_committed`). Restoring it is a measured decision for later.

faust hard-codes aiokafka's `fetch_max_wait_ms=1500`. A broker answers a fetch early when data
arrives - Apache Kafka does - but Tansu (the embedded broker) holds it for the whole wait, so each
event waited ~0.75 s on average (measured: event->revocation p50 930 ms at 300 events/s). A short
wait bounds that; against Apache Kafka a short wait only costs some empty fetches while idle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("sessionwatch.worker")


class PendingDeliveries:
    """Sends the agents started but the broker has not confirmed yet.

    An agent used to await every event's outputs before taking the next event (faust acks an
    event when the loop moves on, and an acked offset may be committed): one broker round trip per
    event, 82 % of the worker's time (measured: 24.7 s of 30 s) and ~250 events/s. Now an agent
    registers its sends here and moves on; the consumer drains this set before it computes which
    offsets to commit (TunedConsumer._commit_tps), so an offset is still never committed ahead of
    a state write, finding, revocation or forward it caused.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        self.limit = limit

    def add(self, deliveries: list[Any]) -> None:
        for fut in deliveries:
            if not fut.done():
                self._pending.add(fut)
                fut.add_done_callback(self._pending.discard)
            elif fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.limit

    async def drain(self) -> None:
        """Return once every registered send is confirmed (raises if one failed).

        Returns without awaiting when nothing is pending, so a caller that reads acked offsets
        right after sees only events whose sends are confirmed.
        """
        while self._pending:
            await asyncio.gather(*list(self._pending))

    def __len__(self) -> int:
        return len(self._pending)


class TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts and builds its fetcher.
        consumer._fetch_max_wait_ms = transport.app.fetch_max_wait_ms
        return consumer


class TunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> TunedConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Any:
        """Seek to committed offsets, except where a committed offset lies beyond the log's end.

        Seen on the embedded broker (Tansu) after partitions moved worker -> worker -> worker:
        (a) routinely, a committed offset one past the log end (100 for a log ending at 99);
        (b) once in a few runs, far past it (116 for a log ending at 89). aiokafka then waits at
        that offset, Tansu answers its fetches with nothing, and the worker silently skips the
        next messages (a) or stops consuming the partition until the log grows past it (b: the
        failover test stalled for 150 s). One past the end means everything was processed: read
        on from the end. Further past, the offset cannot be trusted: reread the partition from
        its beginning; nothing is lost and repeats are dropped by event id and deterministic
        output ids downstream.
        """
        committed = dict(await super().seek_to_committed())
        suspect = [tp for tp, offset in committed.items()
                   if offset is not None and offset > 0 and not self._is_changelog_tp(tp)]
        if suspect:
            ends = await self.highwaters(*suspect)
            for tp in suspect:
                end = ends.get(tp)
                if end is None or committed[tp] <= end:
                    continue
                restart = end if committed[tp] == end + 1 else 0
                log.warning("committed offset %d of %s[%d] is beyond the log end %d: "
                            "reading on from offset %d", committed[tp], tp.topic, tp.partition,
                            end, restart)
                await self.seek(tp, restart)
                committed[tp] = restart
        return committed

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        # faust reads the acked offsets synchronously at the start of _commit_tps, so after the
        # drain (which ends without yielding once nothing is pending) no event can be acked
        # whose sends are unconfirmed. A failed send raises here: no commit, the events are
        # processed again (at least once).
        await self.app.pending_deliveries.drain()
        return bool(await super()._commit_tps(tps, start_new_transaction))


class TunedTransport(faust_aiokafka.Transport):
    Consumer = TunedConsumer


class TunedApp(faust.App):
    """A faust App whose consumer fetches with `fetch_max_wait_ms` (the setting) of wait."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 20, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.pending_deliveries = PendingDeliveries()
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return TunedTransport(self.conf.broker_consumer, self)
