"""Fuzzing decode_event: whatever arrives on the topic, the worker gets an Event or InvalidEvent
(which it dead-letters), never another exception that would stop the agent; and what decodes
survives a re-encode unchanged."""

from __future__ import annotations

import json
import re
import string
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from producers import contract
from producers.contract import Event, EventType, decode_event, encode
from producers.errors import InvalidEvent

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
rfc3339_times = st.datetimes(timezones=offsets | st.just(UTC)).map(
    lambda dt: dt.isoformat()
)

GOOD: dict[str, st.SearchStrategy[Any]] = {
    "schema": st.sampled_from(["sessionwatch.event/1", "sessionwatch.event/1.3"]),
    "id": st.text(min_size=1, max_size=128),
    "type": st.sampled_from([t.value for t in EventType]),
    "time": rfc3339_times,
    "ip": st.ip_addresses().map(str),
    "tenant": st.text(min_size=1, max_size=128),
    "session": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    "user": st.text(min_size=1, max_size=256) | st.text(min_size=1, max_size=10) | st.none(),
    "user_agent": st.none() | st.text(max_size=1024),
    "attrs": st.dictionaries(st.text(max_size=10), json_values, max_size=5),
}
REQUIRED = ("schema", "id", "type", "time", "ip")
# Values near and past the edges, and plain wrong ones, per field.
BAD: dict[str, st.SearchStrategy[Any]] = {
    "schema": st.sampled_from(["sessionwatch.event/2", "sessionwatch.event/", "sessionwatch/1",
                               "sessionwatch.finding/1", "sessionwatch.event/1.x"])
    | st.from_regex(r"sessionwatch\.event/[0-9]{1,3}(\.[0-9]{1,3})?", fullmatch=True),
    "id": st.sampled_from(["", "x" * 129]),
    "type": st.text(max_size=25),
    "time": st.sampled_from(["2026-03-02T09:00:00", "2026-02-30T09:00:00Z", "2026-03-02",
                             "2026-03-02T09:00:00.123456789Z", "2026-03-02T09:00:00+24:00"])
    | st.text(max_size=30),
    "ip": st.text(max_size=45) | st.sampled_from(["999.1.1.1", "1.2.3", "::g", "fe80::1%eth0"]),
    "tenant": st.sampled_from(["", "t" * 129]),
    "session": st.sampled_from(["", "s" * 129, None]),
    "user": st.sampled_from(["", "u" * 257]),
    "user_agent": st.just("a" * 1025),
    "attrs": st.none() | st.lists(json_scalars, max_size=2),
}
FIELDS = tuple(GOOD)


@st.composite
def contract_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """An event-like object: every field well-formed, edge-case, arbitrary JSON or absent,
    plus sometimes an unknown extra field as a newer minor revision would send."""
    doc: dict[str, Any] = {}
    # Half the objects are nearly right (so that many decode and the round trip is exercised),
    # the other half are mixed freely.
    good_weight = draw(st.sampled_from([60, 3]))
    kinds = st.sampled_from(["good"] * good_weight + ["bad", "any", "absent"])
    for name in FIELDS:
        kind = draw(kinds)
        if kind == "absent" or (kind == "good" and name not in REQUIRED and draw(st.booleans())
                                and name != "session"):
            continue
        strategy = {"good": GOOD, "bad": BAD}.get(kind)
        doc[name] = draw(strategy[name] if strategy else json_values)
    extra = draw(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in FIELDS),
                                 json_values, max_size=2))
    return {**extra, **doc}


def test_strategies_cover_every_contract_field():
    assert set(FIELDS) == set(BAD) == set(Event.__struct_fields__)


def decodes_or_is_invalid(raw: bytes | str) -> None:
    """The property: an Event that re-encodes to an equal Event, or InvalidEvent."""
    try:
        event = decode_event(raw)
    except InvalidEvent as exc:
        assert exc.code in {"not_json", "invalid", "unknown_schema", "unsupported_major"}
        assert exc.detail
        return
    again = decode_event(encode(event))
    assert again == event
    assert encode(again) == encode(event)


@FUZZ
@given(st.binary(max_size=512))
@example(b"")
@example(b"\xff")
@example(b"null")
@example(b"[]")
@example(b"{}")
def test_arbitrary_bytes(raw: bytes):
    decodes_or_is_invalid(raw)


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any):
    decodes_or_is_invalid(json.dumps(value))


@FUZZ
@given(contract_shaped())
def test_contract_shaped_objects(doc: dict[str, Any]):
    decodes_or_is_invalid(json.dumps(doc))
    decodes_or_is_invalid(json.dumps(doc, ensure_ascii=False).encode())


@FUZZ
@given(contract_shaped(), st.integers(min_value=0), st.text(min_size=1, max_size=8))
def test_contract_shaped_with_garbage_spliced_in(doc: dict[str, Any], at: int, junk: str):
    """Valid UTF-8 junk anywhere; invalid UTF-8 is test_invalid_utf8_inside_a_string (a bug)."""
    raw = json.dumps(doc, ensure_ascii=False)
    at %= len(raw) + 1
    decodes_or_is_invalid((raw[:at] + junk + raw[at:]).encode())


with (Path(contract.__file__).parent / "schemas" / "event.v1.json").open() as _f:
    EVENT_SCHEMA = Draft202012Validator(
        json.load(_f), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
CHECKS_DATE_TIME = "date-time" in Draft202012Validator.FORMAT_CHECKER.checkers
_NON_ASCII_DIGIT = re.compile(r"[^\x00-\x7f]")


def _known_divergence(doc: dict[str, Any], decoder_error: InvalidEvent | None) -> bool:
    """The divergences test_schemas.py lists as decoder bugs (xfail), plus calendar checks that
    Python's jsonschema skips without rfc3339-validator."""
    when = doc.get("time")
    if decoder_error is None:  # the decoder accepted what the schema refused
        # msgspec accepts these two time spellings; the schema does not (see test_schemas.py)
        return isinstance(when, str) and bool(" " in when or re.search(r"[+-]\d{4}$", when))
    return not CHECKS_DATE_TIME and "`$.time`" in decoder_error.detail


@FUZZ
@given(contract_shaped())
def test_schema_file_and_decoder_agree(doc: dict[str, Any]):
    """Differential: the JSON Schema other languages validate against, and decode_event."""
    schema_ok = EVENT_SCHEMA.is_valid(doc)
    error: InvalidEvent | None = None
    try:
        decode_event(json.dumps(doc))
    except InvalidEvent as exc:
        error = exc
    if schema_ok == (error is None) or _known_divergence(doc, error):
        return
    problems = [e.message for e in EVENT_SCHEMA.iter_errors(doc)]
    raise AssertionError(f"schema says {problems or 'valid'}, decoder says {error or 'valid'}")


def test_decoding_enough_valid_events_to_mean_something():
    """Guard against the contract-shaped strategy drifting into producing only garbage."""
    decoded = 0

    @settings(max_examples=100, deadline=None, database=None)
    @given(contract_shaped())
    def count(doc: dict[str, Any]) -> None:
        nonlocal decoded
        try:
            decode_event(json.dumps(doc))
            decoded += 1
        except InvalidEvent:
            pass

    count()
    assert decoded >= 10


VALID = {
    "schema": "sessionwatch.event/1", "id": "e", "type": "session.activity",
    "time": "2026-03-02T09:00:00Z", "session": "s", "ip": "81.2.69.142",
}


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.binary(min_size=1, max_size=8).filter(_not_utf8))
@example("schema", b"\xff")
@example("session", b"\xed\xa0\x80")  # a UTF-8-encoded surrogate (CESU-8 / WTF-8 producers)
def test_invalid_utf8_inside_a_string(field: str, junk: bytes):
    doc = dict(VALID, **{field: "__JUNK__"})
    raw = json.dumps(doc).encode().replace(b"__JUNK__", junk)
    decodes_or_is_invalid(raw)


def test_printable_garbage_is_invalid_not_a_crash():
    for text in (string.printable, "{" * 1000, "[" * 100_000, '{"schema":' * 1000):
        with pytest.raises(InvalidEvent):
            decode_event(text)
