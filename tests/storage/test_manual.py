"""Revocations decided by hand in the console (storage/manual.py): contract-valid, deterministic
ids, the admin as the only cause, and clear refusals. No broker or database needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from producers import contract
from producers.contract import Action, Scope, Severity, decode_revocation, encode
from storage.manual import MANUAL_DETECTOR, ManualRevocationError, is_manual, manual_revocation

SCHEMA = json.loads((Path(contract.__file__).parent / "schemas" / "revocation.v1.json").read_text())


def schema_errors(doc: dict) -> list[str]:
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


NOW = datetime(2026, 3, 2, 9, 0, 0, 123_456, tzinfo=UTC)


def make(**overrides):
    fields = dict(tenant="shop", scope=Scope.SESSION, action=Action.REVOKE, session="ab12",
                  user="alice", admin="ann", note="customer called", now=NOW)
    fields.update(overrides)
    return manual_revocation(**fields)


SOURCE = dict(scope=Scope.SOURCE, session=None, user=None, source="203.0.113.0/24")
USER = dict(scope=Scope.USER, session=None, user="bob")


@pytest.mark.parametrize("overrides", [
    {},
    dict(action=Action.STEP_UP),
    USER,
    dict(SOURCE, action=Action.BLOCK, expires=NOW + timedelta(hours=1)),
    dict(SOURCE, action=Action.LIFT),
    dict(SOURCE, action="lift", scope="source", expires=NOW + timedelta(hours=2)),
], ids=["revoke-session", "step-up-session", "revoke-user", "block", "lift", "lift-strings"])
def test_every_manual_decision_is_a_valid_revocation(overrides):
    revocation = make(**overrides)
    doc = json.loads(encode(revocation))
    assert schema_errors(doc) == []
    assert decode_revocation(encode(revocation)) == revocation
    assert revocation.events == [] and is_manual(revocation)
    [reason] = revocation.reasons
    assert reason.detector == MANUAL_DETECTOR
    assert reason.summary == f"{revocation.action.value} by ann in the console"
    assert reason.evidence == {"admin": "ann"}
    assert revocation.decided_at == revocation.event_time == NOW
    assert "customer called" not in encode(revocation).decode()  # the note is never published


def test_severity_follows_the_action():
    assert make().reasons[0].severity is Severity.HIGH
    assert make(**SOURCE, action=Action.BLOCK,
                expires=NOW + timedelta(hours=1)).reasons[0].severity is Severity.HIGH
    assert make(action=Action.STEP_UP).reasons[0].severity is Severity.MEDIUM
    assert make(**SOURCE, action=Action.LIFT).reasons[0].severity is Severity.LOW


def test_subjects_per_scope():
    session = make()
    assert (session.session, session.user, session.source) == ("ab12", "alice", None)
    user = make(**USER)
    assert (user.session, user.user, user.source, user.not_before) == (None, "bob", None, NOW)
    later = NOW + timedelta(minutes=5)
    assert make(**USER, not_before=later).not_before == later
    lift = make(**SOURCE, action=Action.LIFT)
    assert (lift.session, lift.user, lift.source, lift.expires) == (
        None, None, "203.0.113.0/24", None)


def test_ids_are_deterministic_and_differ_by_what_was_decided():
    assert make().id == make().id == make(note="another note").id
    others = {make(admin="ben").id, make(now=NOW + timedelta(milliseconds=1)).id,
              make(session="cd34").id, make(tenant="bank").id, make(action=Action.STEP_UP).id,
              make(**USER).id}
    assert make().id not in others and len(others) == 6
    # The same millisecond is the same decision (a double click publishes one revocation).
    assert make(now=NOW.replace(microsecond=123_999)).id == make().id


@pytest.mark.parametrize(("overrides", "field"), [
    (dict(scope="tenant"), "scope"),
    (dict(action="nuke"), "action"),
    (dict(action=Action.LIFT), "action"),                     # lift a session: no such thing
    (dict(USER, action=Action.STEP_UP), "action"),            # read as a revoke by the apps
    (dict(SOURCE, action=Action.REVOKE), "action"),
    (dict(session=None), "session"),
    (dict(USER, user=""), "user"),
    (dict(USER, session="ab12"), "session"),
    (dict(SOURCE, action=Action.LIFT, source="not-an-ip"), "source"),
    (dict(SOURCE, action=Action.LIFT, user="alice"), "user"),
    (dict(SOURCE, action=Action.BLOCK), "expires"),
    (dict(SOURCE, action=Action.BLOCK, expires=NOW), "expires"),
    (dict(not_before=NOW), "not_before"),
    (dict(admin="  "), "admin"),
    (dict(admin="a" * 201), "admin"),
    (dict(tenant=""), "tenant"),
    (dict(note="x" * 2001), "note"),
    (dict(now=datetime(2026, 3, 2, 9, 0)), "now"),
    (dict(USER, not_before=datetime(2026, 3, 2, 9, 0)), "not_before"),
])
def test_refusals_name_the_field(overrides, field):
    with pytest.raises(ManualRevocationError, match=rf"^{field}"):
        make(**overrides)
    assert issubclass(ManualRevocationError, ValueError)
