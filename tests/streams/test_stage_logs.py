"""A log line about one message names it (sessionwatch/logs.py, `--log-format json`): topic,
partition and offset, and tenant and event id when it decoded - for the stages' dead letters and
decisions and the engine's last line of defence. The stages run as in tests/streams/
test_stage_metrics.py; trouble is made real: garbage input, and a store holding bytes that are
not a state (what a corrupted or foreign store gives the stage)."""

from __future__ import annotations

import io
import json
import logging
import secrets
from typing import Any

import pytest
from factories import COMCAST, CURL, DIGITALOCEAN, make_event
from quixstreams.models import MessageContext
from quixstreams.models.rows import Row

from producers.contract import DEADLETTER_TOPIC, EVENTS_TOPIC, decode_event
from sessionwatch.logs import CONTEXT_KEYS, configure_logging
from streams.engine import _processing_error
from streams.inputs import decode_incoming, decode_user_incoming
from streams.outputs import Output
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import by_source_topic, by_user_topic
from streams.session_stage import STATE_KEY, SessionStage
from streams.source_order import OrderedSource
from streams.source_pipeline import SourcePipeline
from streams.source_stage import SourceStage
from streams.stats import WorkerStats
from streams.user_pipeline import UserPipeline
from streams.user_stage import STATE_KEY as USER_STATE_KEY
from streams.user_stage import UserStage

BY_USER, BY_SOURCE = by_user_topic("sw-logs"), by_source_topic("sw-logs")


class DictState:
    def __init__(self, values: dict[bytes, bytes] | None = None) -> None:
        self.values = values or {}

    def get_bytes(self, key: bytes) -> bytes | None:
        return self.values.get(key)

    def set_bytes(self, key: bytes, value: bytes, ttl: Any = None) -> None:
        self.values[key] = value


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    yield out
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def about(line: dict[str, Any]) -> dict[str, Any]:
    return {k: line[k] for k in CONTEXT_KEYS if k in line}


def encoded(**kw: Any) -> bytes:
    return json.dumps(make_event(**kw)).encode()


@pytest.fixture
def session_stage(enricher) -> SessionStage:
    return SessionStage(SessionPipeline(enricher, Policy()), enricher, WorkerStats(), BY_USER,
                        BY_SOURCE)


def test_an_undecodable_event_is_logged_with_its_position_only(captured, session_stage):
    out = session_stage(decode_incoming(b"{not json"), b"junk", 3, 41, DictState())
    assert [o.topic for o in out] == [DEADLETTER_TOPIC]
    (line,) = lines(captured)
    assert line["level"] == "warning" and "dead-lettered sessionwatch.events[3]@41" in line["message"]
    assert about(line) == {"topic": EVENTS_TOPIC, "partition": 3, "offset": 41}


def test_a_decodable_event_that_fails_is_logged_with_tenant_and_event_id(captured, session_stage):
    session = secrets.token_hex(32)
    raw = encoded(session=session, tenant="bank-a", id="ev-corrupt-1")
    # The store gives back bytes that are not a session state.
    state = DictState({STATE_KEY: b"\x00not a state"})
    out = session_stage(decode_incoming(raw), session.encode(), 1, 7, state)
    assert [o.topic for o in out] == [DEADLETTER_TOPIC]
    (line,) = lines(captured)
    assert line["level"] == "error" and "exc" in line
    assert about(line) == {"topic": EVENTS_TOPIC, "partition": 1, "offset": 7,
                           "tenant": "bank-a", "event_id": "ev-corrupt-1"}


def test_a_revocation_line_names_the_event_that_decided_it(captured, session_stage):
    session = secrets.token_hex(32)
    state = DictState()
    session_stage(decode_incoming(encoded(type="session.authenticated", session=session,
                                          ip=COMCAST, tenant="bank-b", id="ev-login")),
                  session.encode(), 0, 10, state)
    session_stage(decode_incoming(encoded(session=session, ip=DIGITALOCEAN, user_agent=CURL,
                                          at=30, tenant="bank-b", id="ev-replay")),
                  session.encode(), 0, 11, state)
    decided = [line for line in lines(captured) if "on event ev-replay" in line["message"]]
    assert decided, lines(captured)
    assert about(decided[0]) == {"topic": EVENTS_TOPIC, "partition": 0, "offset": 11,
                                 "tenant": "bank-b", "event_id": "ev-replay"}
    assert session not in captured.getvalue()   # only a prefix of the hash, never all of it


def test_the_user_stage_names_what_it_dead_letters(captured, enricher):
    stage = UserStage(UserPipeline(enricher, Policy()), WorkerStats(), BY_USER, 60.0,
                      lambda *_: DictState())
    stage(decode_user_incoming(b"\xff garbage"), b"k", 2, 5, DictState())
    raw = encoded(type="session.authenticated", session=secrets.token_hex(32), user="carol",
                  tenant="bank-c", id="ev-user-1")
    stage(decode_user_incoming(raw), b"bank-c\x1fcarol", 2, 6,
          DictState({USER_STATE_KEY: b"\x00not a user"}))
    garbage, corrupt = lines(captured)
    assert about(garbage) == {"topic": BY_USER, "partition": 2, "offset": 5}
    assert about(corrupt) == {"topic": BY_USER, "partition": 2, "offset": 6,
                              "tenant": "bank-c", "event_id": "ev-user-1"}


def test_the_source_stage_names_what_it_dead_letters(captured, enricher):
    stage = SourceStage(lambda: OrderedSource(SourcePipeline(enricher, Policy()), 60.0),
                        WorkerStats(), BY_SOURCE)
    out = stage(decode_incoming(b"[]"), b"k", 4, 99)
    assert [o.topic for o in out] == [DEADLETTER_TOPIC]
    (line,) = lines(captured)
    assert about(line) == {"topic": BY_SOURCE, "partition": 4, "offset": 99}


def test_the_engines_last_line_of_defence_logs_the_position_and_keeps_the_bytes(captured):
    """What escapes a stage (a bug in the wiring) reaches Quix's on_processing_error with the
    Row: logged with where it was, dead-lettered with the bytes it came as."""
    raw = encoded(session="s-wiring", tenant="bank-d", id="ev-wiring")
    row = Row(value=decode_incoming(raw), key=b"s-wiring", timestamp=0,
              context=MessageContext(topic=EVENTS_TOPIC, partition=1, offset=123, size=len(raw)),
              headers=None)
    produced: list[Output] = []
    assert _processing_error(produced.extend, RuntimeError("wiring bug"), row) is True
    (line,) = lines(captured)
    assert about(line) == {"topic": EVENTS_TOPIC, "partition": 1, "offset": 123,
                           "tenant": "bank-d", "event_id": "ev-wiring"}
    (dead,) = produced
    record = json.loads(dead.value)
    assert record["reason"] == "processing_error" and (record["partition"], record["offset"]) \
        == (1, 123)
    assert decode_event(record["value"]).id == "ev-wiring"   # nothing lost
