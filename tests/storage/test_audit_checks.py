"""What storage/audit.py refuses or normalises before anything is written (no database needed);
the table itself is tested on both backends in tests/integration/test_audit.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from storage.audit import AuditError, audit_entry

AT = datetime(2031, 7, 1, 10, 0, 0, 123_456, tzinfo=UTC)


def entry(**overrides):
    fields = dict(actor="ann", role="responder", action="revoke_session", target="ab12",
                  tenant="shop", detail={"revocation": "r-1"}, client="127.0.0.1", at=AT)
    fields.update(overrides)
    return audit_entry(**fields)


def test_ids_are_deterministic_to_the_millisecond():
    assert entry().id == entry(at=AT.replace(microsecond=123_999)).id
    assert entry().at == AT.replace(microsecond=123_000)
    assert len({entry().id, entry(result="refused").id, entry(actor="ben").id,
                entry(detail={"revocation": "r-2"}).id, entry(client="::1").id}) == 5


def test_row_shape_and_normalisation():
    row = entry(actor="  ann  ", client="::ffff:10.0.0.7", detail={"b": 1, "a": [1, 2]}).row()
    assert row["actor"] == "ann" and row["client"] == "10.0.0.7"
    assert row["detail"] == '{"a":[1,2],"b":1}'
    assert row["time_ms"] == 1_940_666_400_123  # 2031-07-01T10:00:00.123Z
    # What a test client or proxy calls itself is kept as given (bounded).
    assert entry(client="testclient").client == "testclient"
    assert len(entry(actor="x" * 500).actor) == 200  # a name typed at a failed sign-in


@pytest.mark.parametrize(("overrides", "field"), [
    (dict(role="admin"), "role"),
    (dict(action="Revoke Session"), "action"),
    (dict(action=""), "action"),
    (dict(result="maybe"), "result"),
    (dict(target="t" * 257), "target"),
    (dict(detail={"session_token": "x"}), "detail.session_token"),
    (dict(detail={"Password": "x"}), "detail.Password"),
    (dict(detail={"form": {"note": "x"}}), "detail.form.note"),
    (dict(detail={"blob": "x" * 5000}), "detail"),
    (dict(detail={"when": object()}), "detail"),
    (dict(at=datetime(2031, 7, 1)), "at"),
])
def test_refusals_name_the_field(overrides, field):
    with pytest.raises(AuditError, match=rf"^{field}"):
        entry(**overrides)
