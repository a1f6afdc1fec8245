"""`sessionwatch replay`: archived events read back, backtested under a policy, re-published.

Runs on both archive backends (Debian's ClickHouse 18.16 server and a fresh chDB directory) and
the real broker. The server is shared with other tests, so each test writes under its own tenant
and its own days far from everyone else's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import UTC, timedelta

import pytest
from factories import CHROME, COMCAST, CURL, DIGITALOCEAN, T0, make_event
from integration.conftest import ClickHouseServer, read_until

from producers.contract import EVENTS_TOPIC, Event, decode_event
from sessionwatch.cli import main
from sessionwatch.replay import backtest, republish
from storage.clickhouse import ChdbBackend, ServerBackend
from storage.clickhouse.rows import event_row, revocation_row
from storage.replay import read_events, read_revocations
from streams.local import LocalRunner

pytestmark = pytest.mark.integration


class Scenario:
    """One benign session and one hijacked one (the victim's cookie replayed by curl from a
    datacenter), in their own tenant and hour."""

    def __init__(self) -> None:
        tag = uuid.uuid4()
        self.tenant = f"t-replay-{tag.hex[:10]}"
        # A day of its own, decades ahead: no other test's events fall in the range.
        self.base = 86_400.0 * (10_000 + tag.int % 10_000)
        self.since = T0 + timedelta(seconds=self.base)
        self.until = self.since + timedelta(hours=1)
        benign, victim = f"s-benign-{tag.hex[:8]}", f"s-victim-{tag.hex[:8]}"
        self.benign, self.victim = benign, victim
        steps = [
            (0, benign, "bob", "session.authenticated", COMCAST, CHROME, {"mfa": True}),
            (5, victim, "alice", "session.authenticated", COMCAST, CHROME, {}),
            (30, benign, "bob", "session.activity", COMCAST, CHROME, {"path": "/a", "n": 1}),
            (40, victim, "alice", "session.activity", COMCAST, CHROME, {"path": "/b"}),
            (40, benign, "bob", "session.activity", COMCAST, CHROME, {}),  # a tie in time
            (70, victim, "alice", "session.activity", DIGITALOCEAN, CURL, {"path": "/export"}),
            (80, victim, "alice", "session.activity", DIGITALOCEAN, CURL, {}),
            (90, benign, "bob", "session.activity", COMCAST, None, {}),
        ]
        self.events = [
            decode_event(json.dumps(make_event(
                kind, session=session, user=user, ip=ip, user_agent=ua,
                at=self.base + at, tenant=self.tenant, attrs=attrs)))
            for at, session, user, kind, ip, ua, attrs in steps]

    def in_order(self) -> list[Event]:
        return sorted(self.events, key=lambda e: (e.time, e.tenant, e.session or "", e.id))

    def decided(self, enricher) -> list:
        """What LocalRunner decides under the built-in policy: the "archived" revocations."""
        runner = LocalRunner(enricher=enricher)
        return [r for e in self.in_order() for r in runner.process(e)[1]]


@pytest.fixture(params=["clickhouse", "chdb"])
def archive(request: pytest.FixtureRequest, tmp_path):
    """A migrated backend; for chDB a fresh directory (one open per process: closed after)."""
    if request.param == "clickhouse":
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        backend = ServerBackend(server.url)
        backend.location = ["--clickhouse", server.url]
    else:
        path = tmp_path / "chdb"
        backend = ChdbBackend(str(path))
        backend.location = ["--chdb", str(path)]
    backend.migrate()
    yield backend
    backend.close()


@pytest.fixture
def scenario(archive, enricher) -> Scenario:
    s = Scenario()
    archive.insert("events", [event_row(e) for e in s.events])
    decided = s.decided(enricher)
    assert [r.session for r in decided] == [s.victim], "the hijack is revoked under defaults"
    archive.insert("revocations", [revocation_row(r) for r in decided])
    return s


def by_session(events) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for e in events:
        out[e.session].append(e.id)
    return dict(out)


def test_read_events_gives_the_originals_in_per_session_order(archive, scenario):
    got = list(read_events(archive, scenario.since, scenario.until, scenario.tenant))
    assert got == scenario.in_order()
    assert by_session(got) == by_session(scenario.events)  # factories listed them in time order
    # Without a tenant, and in small pages (4 splits the tie at 40 s): the same, in the same order.
    for rows in (1, 3, 4):
        assert list(read_events(archive, scenario.since, scenario.until, page_rows=rows)) == got
    # Rows archived twice (at-least-once) come back once.
    archive.insert("events", [event_row(e) for e in scenario.events[:3]])
    assert list(read_events(archive, scenario.since, scenario.until, scenario.tenant)) == got
    # The range is [since, until): the first event's own millisecond starts it.
    first = scenario.in_order()[0].time
    later = list(read_events(archive, first + timedelta(milliseconds=1), scenario.until,
                             scenario.tenant))
    assert later == got[1:]


def test_read_revocations(archive, scenario):
    [rev] = read_revocations(archive, scenario.since, scenario.until, scenario.tenant)
    assert (rev["scope"], rev["action"], rev["session"], rev["user"], rev["source"]) == (
        "session", "revoke", scenario.victim, "alice", None)
    assert rev["detectors"] == sorted(rev["detectors"]) and "session.ua_change" in rev["detectors"]
    assert read_revocations(archive, scenario.until, scenario.until + timedelta(hours=1),
                            scenario.tenant) == []


def test_backtest_under_the_same_policy_matches_the_archive(archive, scenario, enricher):
    def run():
        events = read_events(archive, scenario.since, scenario.until, scenario.tenant)
        archived = read_revocations(archive, scenario.since, scenario.until, scenario.tenant)
        return backtest(events, None, archived, enricher)

    result = run()
    assert [(b.key, n.key) for b, n in result.both] == [
        ((scenario.tenant, "session", scenario.victim, "revoke"),) * 2]
    assert result.only_before == [] and result.only_new == []
    assert result.detectors_before == result.detectors_new
    assert result.events == len(scenario.events)
    again = run()
    assert again == result
    assert json.dumps(again.to_dict()) == json.dumps(result.to_dict())


def test_backtest_of_a_monitor_only_policy_shows_what_it_would_not_revoke(
        archive, scenario, enricher, tmp_path):
    from streams.policy_file import load_policy

    archived = read_revocations(archive, scenario.since, scenario.until, scenario.tenant)
    detectors = archived[0]["detectors"]
    path = tmp_path / "alert.yaml"
    path.write_text("version: 1\ndefault:\n  detectors:\n"
                    + "".join(f"    {d}: {{action: alert}}\n" for d in detectors))
    policy = load_policy(path)

    def run():
        events = read_events(archive, scenario.since, scenario.until, scenario.tenant)
        return backtest(events, policy, archived, enricher)

    result = run()
    assert result.both == [] and result.only_new == []
    assert [d.key for d in result.only_before] == [
        (scenario.tenant, "session", scenario.victim, "revoke")]
    assert result.only_before[0].detectors == tuple(detectors)
    assert result.detectors_new == {} and set(result.detectors_before) == set(detectors)
    assert result.findings >= len(detectors)  # still found, only not acted on
    assert run() == result


def test_republish_to_a_fresh_topic(archive, scenario, broker):
    topic = f"sessionwatch.replay-{uuid.uuid4().hex[:10]}"
    events = read_events(archive, scenario.since, scenario.until, scenario.tenant)
    assert republish(events, broker.bootstrap, topic) == len(scenario.events)
    records = read_until(broker.bootstrap, [topic], lambda r: len(r) >= len(scenario.events))
    assert len(records) == len(scenario.events)
    got = [decode_event(json.dumps(value)) for _, value in records]
    assert sorted(got, key=lambda e: e.id) == sorted(scenario.events, key=lambda e: e.id)
    assert by_session(got) == by_session(scenario.events)


def test_cli_backtest_writes_json(archive, scenario, tmp_path, capsys):
    archive.close()  # the CLI opens the archive itself (chDB: one open directory per process)
    out = tmp_path / "backtest.json"
    argv = ["replay", "--from", scenario.since.isoformat(),
            "--to", scenario.until.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "--tenant", scenario.tenant, *archive.location, "--backtest", "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert len(report["both"]) == 1 and report["only_before"] == report["only_new"] == []
    assert "revoked by both" in capsys.readouterr().out


def test_cli_publish(archive, scenario, broker, capsys):
    archive.close()
    topic = f"sessionwatch.replay-{uuid.uuid4().hex[:10]}"
    argv = ["replay", "--from", scenario.since.isoformat(), "--to", scenario.until.isoformat(),
            *archive.location, "--publish", "--topic", topic, "--bootstrap", broker.bootstrap]
    assert main(argv) == 0, capsys.readouterr().err
    assert f"{len(scenario.events)} events" in capsys.readouterr().err
    records = read_until(broker.bootstrap, [topic], lambda r: len(r) >= len(scenario.events))
    assert sorted(v["id"] for _, v in records) == sorted(e.id for e in scenario.events)


# -- without services --------------------------------------------------------------------------


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def test_republish_to_the_live_topic_warns(caplog):
    s = Scenario()
    producer = _Producer()
    with caplog.at_level(logging.WARNING, logger="sessionwatch.replay"):
        assert republish(s.in_order(), "127.0.0.1:1", EVENTS_TOPIC, producer=producer) == 8
    assert "live events topic" in caplog.text
    assert [key for _, key, _ in producer.sent] == [e.key.encode() for e in s.in_order()]


def test_cli_refuses_a_naive_time(tmp_path, capsys):
    code = main(["replay", "--from", "2026-03-02T09:00:00", "--to", "2026-03-02T10:00:00Z",
                 "--chdb", str(tmp_path), "--backtest"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--from" in err and "offset" in err


def test_cli_wants_exactly_one_of_publish_and_backtest(tmp_path, capsys):
    base = ["replay", "--from", "2026-03-02T09:00:00Z", "--to", "2026-03-02T10:00:00+00:00",
            "--chdb", str(tmp_path)]
    for extra in (["--publish", "--backtest"], []):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert "--publish" in err and "--backtest" in err
