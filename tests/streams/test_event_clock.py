"""The stages' event-time clock: what is final, and when a quiet input lets held events go."""

from __future__ import annotations

from streams.event_clock import DueIndex, EventClock


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_final_is_older_than_the_newest_minus_the_lateness():
    clock = EventClock(60.0, wall=Wall(0.0))
    assert clock.observe(1000.0)
    assert clock.final_before(idle=False) == 940.0
    assert clock.observe(950.0)          # 50 s behind the newest: within the lateness
    assert not clock.observe(900.0)      # 100 s behind: late
    assert clock.final_before(idle=False) == 940.0


def test_a_quiet_live_input_follows_the_wall_clock_after_a_second():
    wall = Wall(10_000.0)
    clock = EventClock(60.0, wall=wall)
    clock.observe(9_990.0)               # live: about the wall clock
    wall.now += 0.5
    assert clock.final_before() == 9_930.0
    wall.now += 1.0                      # 1.5 s quiet
    assert clock.final_before() == wall.now - 60.0


def test_a_quiet_input_of_past_events_waits_the_lateness_first():
    """A replayed backlog that pauses (a rebalance) must not finalise what is still coming."""
    wall = Wall(1_000_000.0)
    clock = EventClock(60.0, wall=wall)
    clock.observe(5_000.0)               # events from long ago
    wall.now += 30.0
    assert clock.final_before() == 4_940.0
    wall.now += 31.0                     # quiet for longer than the lateness: the replay ended
    assert clock.final_before() == wall.now - 60.0


def test_due_index_gives_each_key_once_earliest_first():
    due = DueIndex()
    due.set("a", 10.0)
    due.set("b", 5.0)
    due.set("a", 20.0)                   # superseded
    assert not due.any_due(5.0)
    assert list(due.pop_due(15.0)) == ["b"]
    assert list(due.pop_due(25.0)) == ["a"]
    assert len(due) == 0
