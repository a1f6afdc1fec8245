"""A second worker joins the group and leaves again: partitions move, nothing is lost or doubled.

Exercises faust's rebalance path through our tuned consumer (streams/faust_tuning.py), which
bypasses faust's per-message wait_first while the flow is active.
"""

from __future__ import annotations

import secrets
import time

import pytest
from conftest import caught_up, make_event, read_until, send, worker_log
from factories import CURL, DIGITALOCEAN

from sessionwatch.demo import WorkerProcess

pytestmark = pytest.mark.integration


def hijacks(n: int) -> tuple[list[str], list[dict]]:
    sessions = [secrets.token_hex(32) for _ in range(n)]
    events = []
    for s in sessions:
        events.append(make_event("session.authenticated", session=s, at=0))
        events.append(make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=30))
    return sessions, events


def test_worker_joins_and_leaves_without_losing_or_doubling(broker, worker, producer, tmp_path):
    before, events_before = hijacks(30)
    send(producer, events_before)
    # Split sessions: logged in before the join, hijacked after it. Whichever worker owns their
    # partition then can only see the hijack through state recovered from the changelog.
    split = [secrets.token_hex(32) for _ in range(30)]
    send(producer, [make_event("session.authenticated", session=s, at=0) for s in split])
    caught_up(broker.bootstrap)
    second = WorkerProcess(broker.bootstrap, tmp_path / "second.log", app_id="sessionwatch-it",
                           partitions=2)
    try:
        second.wait_ready()
        during, events_during = hijacks(30)
        send(producer, events_during)
        send(producer, [make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=60)
                        for s in split])
        caught_up(broker.bootstrap)
    finally:
        stop_started = time.monotonic()
        second.stop()
        print(f"second worker stopped in {time.monotonic() - stop_started:.1f}s "
              f"(exit code {second.proc.returncode})")
    after, events_after = hijacks(30)
    left_at = time.monotonic()
    send(producer, events_after)  # back to one worker, which takes every partition again
    wanted = set(before + during + after + split)
    records = read_until(
        broker.bootstrap, ["sessionwatch.revocations"],
        # Failover normally takes 2-3 s; once in about seven full runs it took over a minute
        # (not reproduced since, with the log dump below in place) - hence the wide deadline.
        lambda r: wanted <= {v["session"] for _, v in r}, timeout_s=150,
    )
    failover_s = time.monotonic() - left_at
    print(f"failover: the remaining worker revoked every later hijack {failover_s:.1f}s after "
          "the second worker stopped")
    revoked = [v["session"] for _, v in records if v["session"] in wanted]
    missing = wanted - set(revoked)
    groups = {"before": before, "split": split, "during": during, "after": after}
    assert not missing, (
        {name: len(missing & set(group)) for name, group in groups.items()},
        "\n".join(worker_log(worker).splitlines()[-60:]),
    )
    # at-least-once may re-emit a decision after a rebalance, but always with the same id
    ids = {}
    for _, v in records:
        if v["session"] in wanted:
            ids.setdefault(v["session"], set()).add(v["id"])
    assert all(len(i) == 1 for i in ids.values())
    assert "Crashed reason=" not in worker_log(worker)
    assert "Crashed reason=" not in (tmp_path / "second.log").read_text(errors="replace")
