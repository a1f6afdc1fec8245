"""The archive the notebooks run against in CI: the incident of tests/integration/test_queries.py
a few hours ago, simulated traffic (sessionwatch.simulation) before it with what the rules
decided about it, and analysts' verdicts on most of those decisions.

Seeded once per test session into a chDB directory; each test names it by SESSIONWATCH_CHDB_DIR,
as an analyst would.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import msgspec
import pytest
from integration.test_queries import archive_incident

from sessionwatch.archive import enricher
from sessionwatch.simulation import START, simulate
from storage.clickhouse import ChdbBackend
from storage.clickhouse.rows import event_row, finding_row, revocation_row
from storage.feedback import record_verdict
from streams.local import LocalRunner

SIM_USERS = 60
SIM_SEED = 21
# Every fourth decision of the simulation stays without a verdict, as in a real queue.
UNJUDGED_EVERY = 4


def archive_simulation(backend, start: datetime, users: int = SIM_USERS, seed: int = SIM_SEED) -> int:
    """Archive `users` simulated users' traffic from `start` (six hours), enriched as the archiver
    enriches, with the findings and revocations LocalRunner decides under the built-in policy, and
    verdicts on most revocations (confirmed when the session was attacked). Returns the number of
    revocations."""
    sim = simulate(users=users, seed=seed)
    shift = start - START
    events = [msgspec.structs.replace(e, time=e.time + shift) for e in sim.events]
    runner = LocalRunner()
    findings, revocations = [], []
    for event in [*events, None]:
        found, decided = runner.process(event) if event is not None else runner.finish()
        findings += found
        revocations += decided
    # The worker stamps decided_at with its wall clock, LocalRunner with the event's time: a
    # delay like a live worker's (lognormal, median ~0.6 s), the same on every run.
    rng = random.Random(seed)
    revocations = [msgspec.structs.replace(
        r, decided_at=r.event_time + timedelta(seconds=rng.lognormvariate(-0.5, 0.9)))
        for r in revocations]
    enrich = enricher(SimpleNamespace(city_db="", asn_db=""))
    backend.migrate()
    backend.insert("events", [event_row(e, enrich(e)) for e in events])
    backend.insert("findings", [finding_row(f) for f in findings])
    backend.insert("revocations", [revocation_row(r) for r in revocations])
    attacked = {s for a in sim.truth.attacks for s in a.sessions}
    for i, r in enumerate(revocations):
        if r.session is None or i % UNJUDGED_EVERY == UNJUDGED_EVERY - 1:
            continue
        verdict = "confirmed" if r.session in attacked else "dismissed"
        record_verdict(backend, r.id, verdict, "analyst@example",
                       at=r.event_time + timedelta(minutes=30))
    return len(revocations)


def seed_archive(path: str, now: datetime | None = None) -> None:
    """The notebooks' archive in `path`: simulated traffic from ten to four hours ago, then the
    incident three hours ago (so it holds the latest session revocation), and verdicts on it."""
    hour = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    backend = ChdbBackend(path)
    try:
        archive_simulation(backend, hour - timedelta(hours=10))
        incident = archive_incident(backend, hour - timedelta(hours=3))
        record_verdict(backend, incident.revoke.id, "confirmed", "analyst@example")
        record_verdict(backend, incident.step_up.id, "dismissed", "analyst@example",
                       note="alice's own phone")
    finally:
        backend.close()  # chDB: one open directory per process; the notebook opens it next


@pytest.fixture(scope="session")
def seeded_archive_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("notebooks") / "archive")
    seed_archive(path)
    return path


@pytest.fixture
def seeded_archive(seeded_archive_path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The seeded chDB directory, named by SESSIONWATCH_CHDB_DIR (no server variable)."""
    monkeypatch.delenv("SESSIONWATCH_CLICKHOUSE", raising=False)
    monkeypatch.setenv("SESSIONWATCH_CHDB_DIR", seeded_archive_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # should a notebook use pyplot: never a window
    return seeded_archive_path
