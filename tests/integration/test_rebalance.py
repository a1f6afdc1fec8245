"""A second worker joins the group and leaves again: partitions move, nothing is lost or doubled.

The two workers here have their own app id (consumer group), so a stall in this test cannot
hold up the shared worker the other integration tests use.

Known open problem (issue 3 note): on the embedded broker (Tansu), after partitions move
worker -> worker -> worker, the group sometimes holds committed offsets beyond the log end.
`TunedConsumer.seek_to_committed` (streams/faust_tuning.py) repairs what it finds at seek time,
but in about half of the runs the remaining worker still stops consuming a partition after the
second worker leaves. That phase ("after") is an expected failure until it is fixed; the state
hand-over phases are asserted strictly.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from conftest import caught_up, make_event, read_until, send
from factories import CURL, DIGITALOCEAN

from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration
APP_ID = "sessionwatch-rebalance"


def hijacks(n: int) -> tuple[list[str], list[dict]]:
    sessions = [secrets.token_hex(32) for _ in range(n)]
    events = []
    for s in sessions:
        events.append(make_event("session.authenticated", session=s, at=0))
        events.append(make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=30))
    return sessions, events


def revoked_once(records, wanted: set[str]) -> tuple[set[str], dict[str, set[str]]]:
    ids: dict[str, set[str]] = {}
    for _, v in records:
        if v.get("session") in wanted:
            ids.setdefault(v.get("session"), set()).add(v["id"])
    return set(ids), ids


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_worker_joins_and_leaves_without_losing_or_doubling(broker, producer, tmp_path):
    first = WorkerProcess(broker.bootstrap, tmp_path / "first.log", app_id=APP_ID, partitions=2)
    try:
        first.wait_ready()
        before, events_before = hijacks(30)
        send(producer, events_before)
        # Split sessions: logged in before the join, hijacked after it. Whichever worker owns
        # their partition then can only see the hijack through state recovered from the
        # changelog.
        split = [secrets.token_hex(32) for _ in range(30)]
        send(producer, [make_event("session.authenticated", session=s, at=0) for s in split])
        caught_up(broker.bootstrap, APP_ID)
        second = WorkerProcess(broker.bootstrap, tmp_path / "second.log", app_id=APP_ID,
                               partitions=2)
        try:
            second.wait_ready()
            during, events_during = hijacks(30)
            send(producer, events_during)
            send(producer, [make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=60)
                            for s in split])
            caught_up(broker.bootstrap, APP_ID)
        finally:
            second.stop()
        handed_over = set(before + during + split)
        records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                             lambda r: handed_over <= {v.get("session") for _, v in r}, timeout_s=30)
        revoked, ids = revoked_once(records, handed_over)
        groups = {"before": before, "split": split, "during": during}
        assert revoked == handed_over, (
            {name: len(set(group) - revoked) for name, group in groups.items()},
            tail(tmp_path / "first.log"))
        # at-least-once may re-emit a decision after a rebalance, but always with the same id
        assert all(len(i) == 1 for i in ids.values())

        after, events_after = hijacks(30)
        left_at = time.monotonic()
        send(producer, events_after)  # back to one worker, which takes every partition again
        records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                             lambda r: set(after) <= {v.get("session") for _, v in r}, timeout_s=60)
        revoked_after, _ = revoked_once(records, set(after))
        print(f"failover: {len(revoked_after)}/30 later hijacks revoked, the last "
              f"{time.monotonic() - left_at:.1f}s after the second worker stopped")
        for log in ("first.log", "second.log"):
            assert "Crashed reason=" not in (tmp_path / log).read_text(errors="replace")
        if revoked_after != set(after):
            pytest.xfail(f"known open problem (module docstring): {30 - len(revoked_after)}/30 "
                         "hijacks after the second worker left were not revoked within 60 s")
    finally:
        first.stop()
