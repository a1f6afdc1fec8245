"""sessionwatch/tuning.py: a threshold swept through the backtest, decisions matched with
verdicts, and a backtest as a table. Events from the factories, no archive needed."""

from __future__ import annotations

import json

import pytest
from factories import CHROME, COMCAST, CURL, DIGITALOCEAN, make_event

from producers.contract import decode_event
from sessionwatch import tuning
from sessionwatch.replay import backtest
from streams.detectors import BY_ID
from streams.local import LocalRunner
from streams.policy import Policy, TenantPolicy


def sessions_of(user: str, count: int, tenant: str = "t-tune") -> list:
    """`count` sessions of one user logging in a minute apart, from home."""
    return [decode_event(json.dumps(make_event(
        "session.authenticated", session=f"s-{user}-{i}", user=user, ip=COMCAST, user_agent=CHROME,
        at=60.0 * i, tenant=tenant))) for i in range(count)]


def test_with_param_changes_the_default_and_every_tenant() -> None:
    base = Policy(tenants={"a": TenantPolicy()})
    base.default.params(BY_ID["user.concurrent_sessions"])  # fills the cache a copy must not keep
    tuned = tuning.with_param(base, "user.concurrent_sessions", "limit", 1)
    assert tuning.default_param(tuned, "user.concurrent_sessions", "limit") == 1
    assert tuning.default_param(tuned, "user.concurrent_sessions", "limit", tenant="a") == 1
    assert tuning.default_param(base, "user.concurrent_sessions", "limit") == 3
    assert "limit=1" in tuned.source
    with pytest.raises(ValueError, match="no parameter 'limt'.*limit"):
        tuning.with_param(None, "user.concurrent_sessions", "limt", 1)
    with pytest.raises(ValueError, match="no detector"):
        tuning.with_param(None, "user.nothing", "limit", 1)


def test_a_sweep_counts_decisions_and_their_verdicts() -> None:
    events = sessions_of("alice", 3)
    # Archived under the default limit (3): nothing decided about three sessions.
    archived: list = []
    verdicts = {("t-tune", "session", "s-alice-0"): "dismissed"}
    sweep = tuning.threshold_sweep(events, archived, "user.concurrent_sessions", "limit", [1, 2, 3],
                                   verdicts=verdicts)
    assert list(sweep.columns) == tuning.SWEEP_COLUMNS
    assert sweep.attrs == {"detector": "user.concurrent_sessions",
                           "param": "user.concurrent_sessions.limit", "current": 3}
    by_value = sweep.set_index("value")
    assert by_value.loc[3, "decisions"] == 0
    assert by_value.loc[1, "decisions"] > by_value.loc[2, "decisions"] > 0
    assert (sweep["decisions"] == sweep["added"]).all() and (sweep["removed"] == 0).all()
    assert (sweep["confirmed"] + sweep["benign"] + sweep["unjudged"] == sweep["decisions"]).all()
    assert (sweep["not_confirmed"] == sweep["benign"] + sweep["unjudged"]).all()
    assert (sweep["by_detector"] == sweep["decisions"]).all()


def test_decisions_table_and_detector_changes_of_a_backtest() -> None:
    hijack = [decode_event(json.dumps(make_event(
        kind, session="s-v", user="v", ip=ip, user_agent=ua, at=at, tenant="t-tune")))
        for kind, ip, ua, at in (("session.authenticated", COMCAST, CHROME, 0),
                                 ("session.activity", DIGITALOCEAN, CURL, 60))]
    runner = LocalRunner()
    decided = [r for e in hijack for r in runner.process(e)[1]]
    assert decided, "the hijack is revoked under the built-in policy"
    archived = [{"id": "r-old", "tenant": "t-tune", "scope": "session", "action": "revoke",
                 "session": "s-gone", "user": "u", "source": None, "detectors": ["x.old"],
                 "time_ms": 0}]
    result = backtest(hijack, None, archived)
    table = tuning.decisions_table(result, {("t-tune", "session", "s-v"): "confirmed"})
    assert list(table["change"]) == ["added", "removed"]
    assert table.loc[0, ["subject", "verdict"]].tolist() == ["s-v", "confirmed"]
    assert table.loc[1, ["subject", "verdict", "detectors"]].tolist() == ["s-gone", "", "x.old"]
    assert str(table["first"].dtype) == "datetime64[ns, UTC]"
    changes = tuning.detector_changes(result).set_index("detector")
    assert changes.loc["x.old", ["before", "new", "change"]].tolist() == [1, 0, -1]
    assert (changes["change"] == changes["new"] - changes["before"]).all()
