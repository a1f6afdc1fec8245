"""`sessionwatch evaluate` against the real broker and a real worker, on a small population."""

from __future__ import annotations

import json

import pytest

from sessionwatch.evaluate_run import EvalOptions, evaluate

pytestmark = pytest.mark.integration


def test_evaluate_reports_and_catches_tool_ua_replay(tmp_path):
    """On its own embedded broker: the simulation's day (March 2026) must not share partitions
    with the other tests' live events (state expires by event time)."""
    out = tmp_path / "report.json"
    # hold_s: no waiting for held user/source decisions - this checks a session-stage class.
    report = evaluate(EvalOptions(users=30, seed=3, attacks_per_class=3, json_path=out,
                                  catch_up_timeout_s=120, hold_s=1.0))
    assert report["run"]["caught_up"], report["run"]
    assert json.loads(out.read_text())["events"] == report["events"]
    assert {"classes", "benign", "detectors", "revocation_ids", "simulation"} <= set(report)
    replay = report["classes"]["replay_cross_country_tool_ua"]
    assert replay["instances"] == 3
    assert replay["caught"] == 3, report["classes"]
    assert replay["delay_events_p50"] is not None and replay["delay_ms_p50"] is not None
    benign = report["benign"]
    assert benign["sessions"] > 20 and set(benign["by_kind"]) >= {"steady"}
    for d in report["detectors"].values():
        assert d["revocations_on_attacks"] + d["revocations_on_benign"] <= 2 * d["revocations"]


def test_offline_matches_the_interface():
    pytest.importorskip("streams.local")
    report = evaluate(EvalOptions(users=20, seed=3, attacks_per_class=2, offline=True))
    assert report["run"]["mode"] == "offline"
    assert report["classes"]["replay_cross_country_tool_ua"]["caught"] == 2
