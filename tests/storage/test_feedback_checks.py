"""storage/feedback.py without an archive: verdict ids, what is refused before any lookup, the
row shape, and the migration that brings the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage.clickhouse import MIGRATIONS
from storage.clickhouse.base import Capabilities
from storage.clickhouse.schema import FEEDBACK, TABLES
from storage.feedback import (
    MAX_NOTE,
    FeedbackError,
    InvalidVerdict,
    Verdict,
    check_verdict,
    verdict_id,
)

AT = datetime(2031, 3, 5, 8, 0, 0, 123_000, tzinfo=UTC)
OLD_SERVER = Capabilities("18.16.1", ipv6_type=False, datetime64=False, low_cardinality=False)
CHDB = Capabilities("26.9.1", ipv6_type=True, datetime64=True, low_cardinality=True)


def test_verdict_ids_are_sha256_of_target_verdict_analyst_and_millisecond() -> None:
    import hashlib

    expected = hashlib.sha256(f"r-1|confirmed|ann|{int(AT.timestamp() * 1000)}".encode())
    assert verdict_id("r-1", "confirmed", "ann", AT) == expected.hexdigest()
    # The same millisecond is the same verdict; another analyst, verdict or moment is another.
    assert verdict_id("r-1", "confirmed", "ann", AT + timedelta(microseconds=500)) == \
        verdict_id("r-1", "confirmed", "ann", AT)
    others = {verdict_id("r-1", "dismissed", "ann", AT), verdict_id("r-1", "confirmed", "ben", AT),
              verdict_id("r-1", "confirmed", "ann", AT + timedelta(milliseconds=1)),
              verdict_id("r-2", "confirmed", "ann", AT)}
    assert len(others) == 4 and verdict_id("r-1", "confirmed", "ann", AT) not in others


def test_check_verdict_refuses_before_any_lookup() -> None:
    assert check_verdict(" r-1 ", "confirmed", " ann ") == ("r-1", "ann")
    with pytest.raises(InvalidVerdict, match="'yes' is not one of confirmed, dismissed"):
        check_verdict("r-1", "yes", "ann")
    with pytest.raises(FeedbackError, match="analyst"):
        check_verdict("r-1", "dismissed", "")
    with pytest.raises(FeedbackError, match="revocation or finding id"):
        check_verdict("  ", "dismissed", "ann")
    with pytest.raises(FeedbackError, match=f"at most {MAX_NOTE}"):
        check_verdict("r-1", "dismissed", "ann", "n" * (MAX_NOTE + 1))
    check_verdict("r-1", "dismissed", "ann", "n" * MAX_NOTE)


def test_a_verdicts_row_has_every_column_of_the_table() -> None:
    verdict = Verdict(id="x", target="r-1", target_kind="revocation", tenant="acme",
                      session=None, user="alice", verdict="confirmed", analyst="ann", at=AT,
                      target_time=AT - timedelta(days=1), note="")
    row = verdict.row()
    assert list(row) == [name for name, _ in FEEDBACK.columns]
    assert (row["session"], row["time_ms"], row["target_time_ms"]) == (
        "", int(AT.timestamp() * 1000), int(AT.timestamp() * 1000) - 86_400_000)


def test_feedback_comes_with_migration_2_and_version_1_is_unchanged() -> None:
    assert [m.label for m in MIGRATIONS[:2]] == ["0001_create_tables", "0002_create_feedback"]
    assert TABLES["feedback"] is FEEDBACK
    for caps in (OLD_SERVER, CHDB):
        assert all("sessionwatch.feedback" not in sql for sql in MIGRATIONS[0].statements(caps))
        (create,) = MIGRATIONS[1].statements(caps)
        assert create.startswith("CREATE TABLE IF NOT EXISTS sessionwatch.feedback")
        assert "ENGINE = ReplacingMergeTree" in create and "toYYYYMMDD(`at`)" in create
    assert "`at` DateTime('UTC')" in MIGRATIONS[1].statements(OLD_SERVER)[0]
    assert "`at` DateTime64(3, 'UTC')" in MIGRATIONS[1].statements(CHDB)[0]
