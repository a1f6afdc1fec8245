"""What the archiver makes of each message before any insert: contract-valid rows only, and
addresses truncated when the privacy option is on. No broker or database is needed for this."""

from __future__ import annotations

import json

from factories import make_event

from producers.contract import EVENTS_TOPIC, REVOCATIONS_TOPIC
from storage.archiver import ArchiveOptions, Archiver


def archiver(**options) -> Archiver:
    return Archiver(ArchiveOptions(bootstrap="127.0.0.1:9", **options), backend=None,  # type: ignore[arg-type]
                    enrich=lambda e: {"country": "US", "asn": "Comcast", "network_kind": "",
                                      "client": "Chrome on Windows"})


def test_valid_events_become_enriched_rows():
    row = archiver()._row(EVENTS_TOPIC, json.dumps(make_event(ip="73.162.10.20")).encode())
    assert row["ip"] == "73.162.10.20" and row["country"] == "US"
    assert row["client"] == "Chrome on Windows"


def test_malformed_messages_never_become_rows():
    a = archiver()
    bad = [b"not json", b"{}", json.dumps(make_event(ip="not-an-ip")).encode(), None]
    assert [a._row(EVENTS_TOPIC, raw) for raw in bad] == [None] * 4
    assert a._row(REVOCATIONS_TOPIC, b'{"id": 1}') is None
    assert a.stats.skipped == 5


def test_truncate_ip_keeps_the_network_part_only():
    a = archiver(truncate_ip=True)
    v4 = a._row(EVENTS_TOPIC, json.dumps(make_event(ip="73.162.10.20")).encode())
    v6 = a._row(EVENTS_TOPIC, json.dumps(make_event(ip="2001:db8:1:2::5")).encode())
    assert (v4["ip"], v6["ip"]) == ("73.162.10.0", "2001:db8:1::")
