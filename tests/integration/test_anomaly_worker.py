"""The learned score in the real worker: loaded the way production loads it, scored through Kafka.

Its own broker and workers (the shared worker runs without a model). The artefact is the
session fixture `trained_model` (tests/conftest.py): trained from the simulator by the same code
as `sessionwatch train`, saved with skops, verified on load.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from integration.conftest import read_until

from models.load import load_model
from producers.contract import EVENTS_TOPIC, encode
from sessionwatch.broker import EmbeddedBroker
from sessionwatch.processes import WorkerProcess
from sessionwatch.simulation import simulate
from streams.local import LocalRunner
from streams.log_end import wait_caught_up

pytestmark = pytest.mark.integration
APP_ID = "anomaly-it"


@pytest.fixture(scope="module")
def scored(trained_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """Simulated traffic with the attack the rules miss, through a worker started with --model."""
    where = tmp_path_factory.mktemp("anomaly")
    sim = simulate(users=80, seed=9, history_days=1, edge_fingerprints=0.5, lookalikes=False,
                   classes=("replay_same_isp_interleaved", "replay_vpn_interleaved"),
                   attacks_per_class=4)
    with EmbeddedBroker(log_path=where / "tansu.log") as broker:
        worker = WorkerProcess(broker.bootstrap, where / "worker.log", app_id=APP_ID,
                               partitions=2, data_dir=str(where / "state"),
                               model=str(trained_model))
        try:
            worker.wait_ready()
            # Sent in event-time order at a steady rate, as apps send: a backlog dumped at once
            # lets one partition run a day of event time ahead of another, and a user's history
            # (earlier days only, models/features.py) is promised only within the day.
            sent_at = time.monotonic()
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            for i, event in enumerate(sim.events):
                delay = sent_at + i / 3000.0 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.produce(EVENTS_TOPIC, encode(event), key=event.key.encode())
                producer.poll(0)
            producer.flush(30)
            assert wait_caught_up(broker.bootstrap, APP_ID,
                                  [EVENTS_TOPIC, f"{APP_ID}-by-user", f"{APP_ID}-by-source"],
                                  timeout_s=120), "the worker did not catch up"
            records = read_until(broker.bootstrap,
                                 ["sessionwatch.findings", "sessionwatch.revocations"],
                                 lambda r: False, timeout_s=3)
        finally:
            worker.stop()
    yield sim, records, Path(worker.log_path).read_text(errors="replace")


def _anomaly(records, topic):
    return [v for t, v in records if t == topic and (
        v.get("detector") == "session.anomaly"
        or any(r["detector"] == "session.anomaly" for r in v.get("reasons", ())))]


def test_same_isp_replay_is_stepped_up_by_the_worker(scored):
    sim, records, log = scored
    assert "session.anomaly: model" in log
    stepped = {v["session"] for v in _anomaly(records, "sessionwatch.revocations")
               if v["action"] == "step_up"}
    for cls in ("replay_same_isp_interleaved", "replay_vpn_interleaved"):
        attacked = {s for a in sim.truth.attacks if a.cls == cls for s in a.sessions}
        caught = attacked & stepped
        assert len(caught) >= 3, f"{cls}: {len(caught)} of {len(attacked)} stepped up"
    findings = _anomaly(records, "sessionwatch.findings")
    assert findings and all(f["evidence"]["because"] for f in findings)
    for f in findings:  # an admin's words, never a raw value
        assert all(isinstance(w, str) and len(w) < 100 for w in f["evidence"]["because"])


def test_worker_scores_exactly_what_the_trainer_computes(scored, trained_model: Path):
    """The trainer's pipeline (streams/local.py) and the worker through Kafka give the same
    vectors, hence the same findings with the same scores, event for event."""
    sim, records, _ = scored
    runner = LocalRunner(model=load_model(trained_model))
    offline = []
    for event in [*sim.events, None]:
        found, _ = runner.process(event) if event is not None else runner.finish()
        offline += [f for f in found if f.detector == "session.anomaly"]
    worker = {f["id"]: f["evidence"]["score"] for f in _anomaly(records, "sessionwatch.findings")}
    assert offline, "the offline run found nothing to compare"
    assert worker == {f.id: f.evidence["score"] for f in offline}


def _tampered(src: Path, dst: Path, how: str) -> Path:
    shutil.copytree(src, dst)
    if how == "byte":
        data = bytearray((dst / "supervised.skops").read_bytes())
        data[len(data) // 2] ^= 0x01
        (dst / "supervised.skops").write_bytes(bytes(data))
    elif how == "features":
        meta = json.loads((dst / "model.json").read_text())
        meta["feature_names"][0], meta["feature_names"][1] = (meta["feature_names"][1],
                                                              meta["feature_names"][0])
        (dst / "model.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize(("how", "names"), [("byte", ("supervised.skops", "SHA-256")),
                                             ("features", ("model.json", "position 0"))])
def test_worker_refuses_a_tampered_model(broker, trained_model: Path, tmp_path: Path, how, names):
    model = _tampered(trained_model, tmp_path / "model", how)
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", app_id=f"tampered-{how}",
                           partitions=2, data_dir=str(tmp_path / "state"), model=str(model))
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="exited early") as refused:
            worker.wait_ready(timeout_s=60)
    finally:
        worker.stop()
    assert time.monotonic() - started < 30
    assert worker.proc.returncode not in (0, None)
    message = str(refused.value)
    for name in names:
        assert name in message, message


def test_sighup_reloads_a_new_model_and_keeps_the_old_one_when_the_new_fails(
        broker, trained_model: Path, tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", app_id="reload-it",
                           partitions=2, data_dir=str(tmp_path / "state"), model=str(model))
    log = Path(worker.log_path)

    def wait_for(text: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the worker's log:\n{worker.tail()}")

    try:
        worker.wait_ready()
        # A retrained model: new thresholds and version (model.json is what a reload compares).
        meta = json.loads((model / "model.json").read_text())
        meta["version"] = "retrained"
        meta["thresholds"]["supervised"]["high"] = 0.99
        (model / "model.json").write_text(json.dumps(meta))
        worker.proc.send_signal(signal.SIGHUP)
        wait_for("model reloaded: version retrained")
        # A broken one: refused, the retrained one stays in use, the worker keeps running.
        data = bytearray((model / "supervised.skops").read_bytes())
        data[100] ^= 0x01
        (model / "supervised.skops").write_bytes(bytes(data))
        worker.proc.send_signal(signal.SIGHUP)
        wait_for("model reload refused, keeping model retrained")
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_a_changed_model_json_is_reloaded_without_a_signal(broker, trained_model: Path,
                                                          tmp_path: Path):
    """The worker checks model.json every few seconds (streams/model_reload.py): replacing the
    artefact is enough, no SIGHUP needed."""
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", app_id="reload-poll-it",
                           partitions=2, data_dir=str(tmp_path / "state"), model=str(model))
    try:
        worker.wait_ready()
        meta = json.loads((model / "model.json").read_text())
        meta["version"] = "polled"
        (model / "model.json").write_text(json.dumps(meta))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "model reloaded: version polled" in Path(worker.log_path).read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"not reloaded:\n{worker.tail()}")
    finally:
        worker.stop()
