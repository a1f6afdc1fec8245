"""The worker's consumer: it reads a hole in an input partition again (storage/offset_holes.py)
instead of skipping those events: the embedded broker's holes are too rare to provoke here, so
librdkafka's consumer is replaced by a stand-in that returns scripted messages and records the
seeks (the seek-and-re-read was checked against Tansu in benchmarks/tansu_fetch_holes.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from storage.offset_holes import OffsetHoles
from streams.engine import _TrueEndConsumer


class Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class Scripted:
    """librdkafka's consumer, scripted: `poll` hands out `script` in order, `consume` in one go."""

    def __init__(self, script: list[Message]) -> None:
        self.script = list(script)
        self.seeks: list[tuple[str, int, int]] = []

    def poll(self, timeout: float | None = None) -> Message | None:
        return self.script.pop(0) if self.script else None

    def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Message]:
        out, self.script = self.script[:num_messages], self.script[num_messages:]
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def consumer(script: list[Message]) -> tuple[_TrueEndConsumer, Scripted]:
    c = _TrueEndConsumer(broker_address="127.0.0.1:9", consumer_group="t",
                         auto_offset_reset="earliest")
    inner = Scripted(script)
    c._inner_consumer = inner  # type: ignore[assignment]
    c._topics = {"sessionwatch.events": SimpleNamespace(is_changelog=False),  # type: ignore[assignment]
                 "changelog__t--session": SimpleNamespace(is_changelog=True)}
    c.holes = OffsetHoles()
    return c, inner


def offsets(messages: list[Any]) -> list[int | None]:
    return [None if m is None else m.offset() for m in messages]


def test_poll_seeks_back_at_a_hole_and_hands_over_the_missing_event_first():
    ev = "sessionwatch.events"
    c, inner = consumer([Message(ev, 0, 1), Message(ev, 0, 2), Message(ev, 0, 4),
                         Message(ev, 0, 3), Message(ev, 0, 4)])
    got = [c.poll(0) for _ in range(5)]
    assert offsets(got) == [1, 2, None, 3, 4]
    assert inner.seeks == [(ev, 0, 3)]
    assert c.holes is not None and c.holes.stats.filled == 1


def test_changelogs_are_not_guarded():
    cl = "changelog__t--session"
    c, inner = consumer([Message(cl, 0, 1), Message(cl, 0, 9)])
    assert offsets([c.poll(0), c.poll(0)]) == [1, 9]
    assert inner.seeks == []


def test_consume_drops_a_partitions_messages_from_its_hole_on():
    ev = "sessionwatch.events"
    c, inner = consumer([Message(ev, 0, 1), Message(ev, 1, 7), Message(ev, 0, 3),
                         Message(ev, 1, 8), Message(ev, 0, 4)])
    got = c.consume(num_messages=10, timeout=0)
    assert [(m.partition(), m.offset()) for m in got] == [(0, 1), (1, 7), (1, 8)]
    assert inner.seeks == [(ev, 0, 2)]


# -- the group dropping the worker (tests/integration/test_worker_membership.py runs it for real)

class FailingApp:
    def __init__(self, exc: Exception, lost_at: float | None) -> None:
        self.exc, self.partitions_lost_at = exc, lost_at

    def run(self) -> None:
        raise self.exc


def run_worker_with(exc: Exception, lost_at: float | None) -> None:
    from streams.engine import Worker
    from streams.stats import WorkerStats

    Worker(app=FailingApp(exc, lost_at), stats=WorkerStats(), session_stage=None,  # type: ignore[arg-type]
           user_stage=None, source_stage=None).run()  # type: ignore[arg-type]


def test_membership_loss_is_told_apart_from_other_failures():
    import time

    import pytest
    from confluent_kafka import KafkaError
    from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError

    from streams.engine import GroupMembershipLost

    with pytest.raises(GroupMembershipLost, match="Unknown member|UNKNOWN_MEMBER"):
        run_worker_with(CheckpointConsumerCommitError(
            KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "Commit failed: Broker: Unknown member")), None)
    # The store closed under a pending checkpoint by on_lost (seen in CI): the same.
    with pytest.raises(GroupMembershipLost, match="partition is closed"):
        run_worker_with(RuntimeError("partition is closed"), time.monotonic())
    # Anything else ends the worker as before.
    with pytest.raises(RuntimeError, match="partition is closed"):
        run_worker_with(RuntimeError("partition is closed"), None)
    with pytest.raises(RuntimeError, match="long ago"):
        run_worker_with(RuntimeError("long ago"), time.monotonic() - 3600)
    with pytest.raises(CheckpointConsumerCommitError):
        run_worker_with(CheckpointConsumerCommitError(
            KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")), None)
