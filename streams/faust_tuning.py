"""faust with a tuned consumer: a short fetch wait (latency), a cheaper per-message handoff, and
offset commits that wait for the agents' sends (throughput without losing at-least-once).

faust hard-codes aiokafka's `fetch_max_wait_ms=1500`. A broker answers a fetch early when data
arrives - Apache Kafka does - but Tansu (the embedded broker) holds it for the whole wait, so each
event waited ~0.75 s on average (measured: event->revocation p50 930 ms at 300 events/s). A short
wait bounds that; against Apache Kafka a short wait only costs some empty fetches while idle.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


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


_EVENT_WAIT_CODE = asyncio.Event.wait.__code__


class TunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> TunedConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        """faust's drain loop hands every message over with
        `wait_first(deliver(message), self.suspend_flow.wait())`: two tasks and an asyncio.wait
        per message, the largest single cost in a bare agent's profile. While the flow is not
        suspended, deliver directly. A rebalance still interrupts a blocked delivery: it cancels
        the fetcher task that runs this loop (App._stop_consumer -> _stop_fetcher).
        """
        if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
            deliver, waiter = coros
            frame = getattr(waiter, "cr_frame", None)
            if (getattr(waiter, "cr_code", None) is _EVENT_WAIT_CODE and frame is not None
                    and frame.f_locals.get("self") is self.suspend_flow):
                waiter.close()
                await deliver
                return None
        return await super().wait_first(*coros, timeout=timeout)


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
