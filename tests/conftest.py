"""Shared fixtures. The real-service fixtures (broker, worker) live in tests/integration/conftest.py."""

from __future__ import annotations

import pytest

from streams.enrich import Enricher


@pytest.fixture(scope="session")
def enricher() -> Enricher:
    return Enricher()


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory):
    """A small artefact trained the way `sessionwatch train --from-simulation` trains (two seeds,
    400 users, two days of history; ~9 s), written and verified by the real code path."""
    from sessionwatch.train import SimulationSource, build, from_simulation

    out = tmp_path_factory.mktemp("model")
    recorded, labels, source = from_simulation(
        SimulationSource(seeds=(1, 2), users=400, history_days=2, edge_fingerprints=0.5))
    build(recorded, labels, source, out)
    return out
