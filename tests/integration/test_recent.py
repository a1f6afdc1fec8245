"""storage/recent.py (the console's reads) and the console's views on both backends, Debian's
ClickHouse 18.16 and chDB, over the incident of test_queries.py: the same answers from either."""

from __future__ import annotations

import pytest
from integration.conftest import seeded_archives
from integration.test_queries import ACME, INCIDENT, archive_incident

from sessionwatch.console import views
from storage import recent

pytestmark = pytest.mark.integration

server_url, chdb_path, server, chdb, backend = seeded_archives(archive_incident, "recent")


def test_latest_revocations_newest_first_in_the_contract_order(backend) -> None:
    revs = recent.latest_revocations(backend, since=INCIDENT.at(0), tenant=ACME)
    assert [r["id"] for r in revs] == sorted(
        [r["id"] for r in revs], key=lambda i: next(x["event_time"] for x in revs if x["id"] == i),
        reverse=True)
    assert all(list(r)[:3] == ["id", "tenant", "scope"] for r in revs)
    revoke = next(r for r in revs if r["id"] == "r-revoke-acme-e05")
    assert (revoke["session"], revoke["user"], revoke["source"]) == ("s-home", "alice", None)
    assert revoke["event_time"].startswith(INCIDENT.at(120.25).isoformat()[:19])
    assert revoke["not_before"] is None and revoke["decided_at"]
    assert {x["detector"] for x in revoke["reasons"]} == set(revoke["detectors"])


def test_filters_detector_action_and_since(backend) -> None:
    blocks = recent.latest_revocations(backend, since=INCIDENT.at(0), action="block")
    assert blocks and {r["action"] for r in blocks} == {"block"}
    # The server is shared with other tests' incidents: check the filter, not the whole list.
    by_detector = recent.latest_revocations(backend, since=INCIDENT.at(0),
                                            detector="session.ua_change")
    assert "r-revoke-acme-e05" in [r["id"] for r in by_detector]
    assert all("session.ua_change" in r["detectors"] for r in by_detector)
    assert "r-block-acme-a24" not in [r["id"] for r in by_detector]
    assert recent.latest_revocations(backend, since=INCIDENT.at(86_400), tenant=ACME) == []
    highs = recent.latest_findings(backend, since=INCIDENT.at(0), severity="high", tenant=ACME)
    assert highs and {f["severity"] for f in highs} == {"high"}


def test_one_by_id_and_its_causes(backend) -> None:
    rev = recent.revocation(backend, "r-revoke-acme-e05")
    assert rev is not None
    causes = recent.causing_findings(backend, rev)
    assert {f["detector"] for f in causes} == {"session.ip_change", "session.ua_change"}
    assert recent.revocation(backend, "nope") is None
    assert recent.finding(backend, causes[0]["id"])["evidence"] == causes[0]["evidence"]


def test_session_references_resolve_on_both_backends(backend) -> None:
    assert views.resolve_session(backend, ACME, "s-home") == "s-home"
    with pytest.raises(views.NotFound):
        views.resolve_session(backend, ACME, "s-")  # under 16 characters: the whole id, never a prefix
    with pytest.raises(views.NotFound):
        views.resolve_session(backend, ACME, "x'; DROP")


def test_the_session_and_revocation_views_agree_across_backends(server, chdb) -> None:
    for name in ("session", "revocation"):
        got = []
        for b in (server, chdb):
            view = (views.session_view(b, ACME, "s-home") if name == "session"
                    else views.revocation_view(b, "r-revoke-acme-e05"))
            got.append(view)
        if name == "session":
            assert [e["what"] for e in got[0]["timeline"]] == [e["what"] for e in got[1]["timeline"]]
            assert [s["session"] for s in got[0]["other_sessions"]] == \
                [s["session"] for s in got[1]["other_sessions"]]
        else:
            assert got[0]["revocation"] == got[1]["revocation"]
            assert [f["id"] for f in got[0]["findings"]] == [f["id"] for f in got[1]["findings"]]
