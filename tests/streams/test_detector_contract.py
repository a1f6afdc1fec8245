"""One contract test over every registered detector: its examples, determinism, no secrets."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from producers.contract import encode
from streams.detectors import SESSION_DETECTORS, Example, SessionDetector
from streams.pipeline import SessionPipeline

DECIDED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CASES = [(d, ex) for d in SESSION_DETECTORS for ex in d.examples]


def run_example(pipeline: SessionPipeline, example: Example):
    state, outcome = None, None
    for event in example.events():
        outcome = pipeline.process(event, state, DECIDED_AT)
        state = outcome.state
    return outcome


@pytest.mark.parametrize(("detector", "example"), CASES, ids=[f"{d.id}:{e.name}" for d, e in CASES])
def test_example(enricher, detector: type[SessionDetector], example: Example):
    pipeline = SessionPipeline(enricher, detectors=[detector()])
    outcome = run_example(pipeline, example)
    mine = [f for f in outcome.findings if f.detector == detector.id]
    assert bool(mine) == example.fires, f"{example.name}: {mine}"
    if example.fires and example.severity is not None:
        assert mine[0].severity == example.severity


@pytest.mark.parametrize("detector", SESSION_DETECTORS, ids=lambda d: d.id)
def test_declares_itself(detector: type[SessionDetector]):
    assert re.fullmatch(r"session\.[a-z_]+", detector.id)
    assert detector.title and detector.reference
    assert any(e.fires for e in detector.examples), "needs a positive example"
    assert any(not e.fires for e in detector.examples), "needs a negative example"
    module = detector.__module__.rsplit(".", 1)[-1]
    assert detector.id.split(".", 1)[1] == module, "the id alone must tell the file"


@pytest.mark.parametrize(("detector", "example"), CASES, ids=[f"{d.id}:{e.name}" for d, e in CASES])
def test_deterministic_and_secret_free(enricher, detector, example):
    pipeline = SessionPipeline(enricher, detectors=[detector()])
    first, second = run_example(pipeline, example), run_example(pipeline, example)
    assert [encode(f) for f in first.findings] == [encode(f) for f in second.findings]
    if first.revocation is not None:
        assert first.revocation.id == second.revocation.id
    for finding in first.findings:
        blob = encode(finding).decode()
        assert "token" not in blob.lower() and "cookie" not in blob.lower()
        assert "password" not in blob.lower()
