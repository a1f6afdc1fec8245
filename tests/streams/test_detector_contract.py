"""One contract test over every registered detector: its examples, determinism, no secrets.

Examples run through the whole in-process pipeline (streams/local.py: session, user and source
stages routed as the worker routes them), so an example proves the detector fires where it runs.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from producers.contract import Severity, encode
from streams.detectors import (
    ALL_DETECTORS,
    SESSION_DETECTORS,
    SOURCE_DETECTORS,
    USER_DETECTORS,
    Detector,
    Example,
)
from streams.detectors.anomaly import example_model
from streams.local import LocalRunner
from streams.policy import DetectorRule, Policy, TenantPolicy

CASES = [(d, ex) for d in ALL_DETECTORS for ex in d.examples]
IDS = [f"{d.id}:{e.name}" for d, e in CASES]
SECRET_WORDS = ("token", "cookie", "password", "secret")


def run_example(enricher, detector: type[Detector], example: Example):
    """The example with only this detector enabled (others would revoke the session first).

    Everything the example's events cause counts, including decisions the user and source
    stages hold for the allowed lateness (taken at `finish`): a negative example must never
    fire, not only not at its last step."""
    rules = {d.id: DetectorRule(enabled=False) for d in ALL_DETECTORS}
    rules[detector.id] = DetectorRule(params=example.params)
    for other in example.with_detectors:
        rules[other] = DetectorRule()
    # The learned score's examples name the detector's hand-set example model; the worker would
    # be started with a trained one (tests/models/ test that).
    model = example_model() if example.params.get("model") == "example" else None
    runner = LocalRunner(policy=Policy(default=TenantPolicy(detectors=rules)), enricher=enricher,
                         model=model)
    findings, revocations = [], []
    for event in [*example.events(), None]:
        found, decided = runner.process(event) if event is not None else runner.finish()
        findings += found
        revocations += decided
    return findings, revocations


@pytest.mark.parametrize(("detector", "example"), CASES, ids=IDS)
def test_example(enricher, detector: type[Detector], example: Example):
    findings, _ = run_example(enricher, detector, example)
    mine = [f for f in findings if f.detector == detector.id]
    assert bool(mine) == example.fires, f"{example.name}: {findings}"
    if example.fires and example.severity is not None:
        assert mine[-1].severity == example.severity  # the example's last finding is its point


@pytest.mark.parametrize("detector", ALL_DETECTORS, ids=lambda d: d.id)
def test_declares_itself(detector: type[Detector]):
    kind = ("session" if detector in SESSION_DETECTORS else
            "user" if detector in USER_DETECTORS else "source")
    # A user-stage detector may act on a session (the learned score needs the user's history,
    # which only the user stage has): then its id names its subject.
    kind = getattr(detector, "subject", kind)
    assert detector in SESSION_DETECTORS + USER_DETECTORS + SOURCE_DETECTORS
    assert re.fullmatch(rf"{kind}\.[a-z_]+", detector.id), "the id names the kind"
    assert detector.title and detector.reference
    assert isinstance(detector.default_severity, Severity)
    assert any(e.fires for e in detector.examples), "needs a positive example"
    assert any(not e.fires for e in detector.examples), "needs a negative example"
    module = detector.__module__.rsplit(".", 1)[-1]
    assert detector.id.split(".", 1)[1] == module, "the id alone must tell the file"
    assert detector.default_action in detector.actions
    assert dataclasses.is_dataclass(detector.Params) and detector.Params.__dataclass_params__.frozen
    assert (detector.__doc__ or detector.__module__) and __import__(
        detector.__module__, fromlist=["_"]).__doc__, "the module docstring justifies the defaults"


def test_ids_are_unique():
    ids = [d.id for d in ALL_DETECTORS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("detector", "example"), CASES, ids=IDS)
def test_deterministic_and_secret_free(enricher, detector, example):
    first = run_example(enricher, detector, example)
    second = run_example(enricher, detector, example)
    assert [encode(f) for f in first[0]] == [encode(f) for f in second[0]]
    assert [r.id for r in first[1]] == [r.id for r in second[1]]
    raw_inputs = {step.user_agent for step in example.steps} | {
        str(v) for step in example.steps for v in step.attrs.values()}
    for finding in first[0]:
        for key, value in finding.evidence.items():
            assert not any(word in key.lower() for word in SECRET_WORDS), key
            # Evidence quotes at most a capped user agent, never an attribute wholesale.
            assert len(str(value)) <= 256 or str(value) not in raw_inputs, key
