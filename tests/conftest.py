"""Shared fixtures. The real-service fixtures (broker, worker) live in tests/integration/conftest.py."""

from __future__ import annotations

import pytest

from streams.enrich import Enricher


@pytest.fixture(scope="session")
def enricher() -> Enricher:
    return Enricher()
