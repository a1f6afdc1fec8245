"""The hole guard (storage/offset_holes.py): a record missing between two a consumer was handed
is read again, and given up on only after `wait_s` (benchmarks/tansu_fetch_holes.py reproduces
the embedded broker's holes; they are too rare to provoke in a test, so the consumer here is a
stand-in that records its seeks)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from storage.consuming import contiguous
from storage.offset_holes import OffsetHoles


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_contiguous_offsets_pass_and_a_rewind_is_followed():
    holes = OffsetHoles()
    assert [holes.check("p", o) for o in (5, 6, 7)] == [None, None, None]
    assert holes.check("p", 3) is None          # a re-read after a rebalance: follow it
    assert holes.check("p", 4) is None
    assert holes.stats.reread == holes.stats.accepted == 0


def test_a_hole_is_read_again_until_it_fills():
    seen: list[tuple[object, str]] = []
    holes = OffsetHoles(on_hole=lambda p, outcome: seen.append((p, outcome)))
    holes.check("p", 10)
    assert holes.check("p", 13) == 11            # 11 and 12 missing: seek back to 11
    assert holes.check("p", 13) == 11            # still missing on the next read
    assert holes.check("p", 11) is None          # there now
    assert holes.check("p", 12) is None
    assert holes.check("p", 13) is None
    assert holes.stats.reread == 2 and holes.stats.filled == 1 and holes.stats.accepted == 0
    assert seen == [("p", "reread"), ("p", "reread"), ("p", "filled")]


def test_a_hole_still_there_after_the_wait_is_accepted_and_logged(caplog):
    clock = Clock()
    holes = OffsetHoles(wait_s=1.0, clock=clock)
    holes.check(("sessionwatch.events", 1), 6001)
    assert holes.check(("sessionwatch.events", 1), 6003) == 6002
    clock.now += 0.5
    assert holes.check(("sessionwatch.events", 1), 6003) == 6002
    clock.now += 0.6
    with caplog.at_level("WARNING", logger="sessionwatch.consuming"):
        assert holes.check(("sessionwatch.events", 1), 6003) is None
    assert "sessionwatch.events[1]: offsets 6002..6002 were still missing" in caplog.text
    assert holes.stats.accepted == 1
    assert holes.check(("sessionwatch.events", 1), 6004) is None   # reading goes on


def test_partitions_are_independent_and_forgotten_at_a_rebalance():
    holes = OffsetHoles()
    holes.check("a", 1)
    holes.check("b", 50)
    assert holes.check("b", 52) == 51
    assert holes.check("a", 2) is None
    holes.forget(["b"])
    assert holes.check("b", 900) is None         # first record after assignment: no baseline
    holes.forget()
    assert holes.check("a", 700) is None


class SeekingConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int]] = []

    def seek(self, tp: str, offset: int) -> None:
        self.seeks.append((tp, offset))


def records(*offsets: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=o) for o in offsets]


def test_contiguous_cuts_a_partition_at_its_hole_and_seeks_back():
    holes, consumer = OffsetHoles(), SeekingConsumer()
    first = contiguous(consumer, holes, {"a": records(0, 1, 2), "b": records(7)})
    assert {tp: [m.offset for m in ms] for tp, ms in first.items()} == {"a": [0, 1, 2], "b": [7]}
    second = contiguous(consumer, holes, {"a": records(3, 5, 6), "b": records(8, 9)})
    assert {tp: [m.offset for m in ms] for tp, ms in second.items()} == {"a": [3], "b": [8, 9]}
    assert consumer.seeks == [("a", 4)]
    # The hole right at the start of a partition's records: nothing of it is handed on.
    third = contiguous(consumer, holes, {"a": records(5, 6)})
    assert third == {} and consumer.seeks == [("a", 4), ("a", 4)]
    fourth = contiguous(consumer, holes, {"a": records(4, 5, 6)})
    assert [m.offset for m in fourth["a"]] == [4, 5, 6]
    assert holes.stats.filled == 1


@pytest.mark.parametrize("wait_s", [0.0])
def test_no_wait_accepts_at_once(wait_s):
    holes = OffsetHoles(wait_s=wait_s)
    holes.check("p", 1)
    assert holes.check("p", 3) is None and holes.stats.accepted == 1
