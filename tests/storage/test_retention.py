"""The retention plan: which day partitions go for everyone, which tenants lose rows earlier."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from producers.errors import ConfigError
from storage.retention import DAY_MS, Deletion, parse_tenant_retention, plan

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def test_one_retention_for_all_drops_day_partitions_only():
    p = plan(NOW, 90, {})
    assert p.drop_before == date(2026, 8, 24) and p.deletions == ()


def test_shorter_tenants_get_deletions_and_partitions_follow_the_longest():
    p = plan(NOW, 90, {"bank": 30, "archive": 365})
    assert p.drop_before == date(2025, 11, 22)
    assert p.deletions == (
        Deletion(NOW_MS - 30 * DAY_MS, tenants=("bank",)),
        Deletion(NOW_MS - 90 * DAY_MS, except_tenants=("archive", "bank")),
    )


def test_a_tenant_kept_forever_keeps_every_partition():
    p = plan(NOW, 0, {"bank": 30})
    assert p.drop_before is None
    assert p.deletions == (Deletion(NOW_MS - 30 * DAY_MS, tenants=("bank",)),)
    assert plan(NOW, 0, {}) == plan(NOW, 0, {"x": 0})  # nothing to do at all
    assert plan(NOW, 0, {}).deletions == ()


def test_tenant_retention_parses_and_names_the_setting_on_errors():
    assert parse_tenant_retention(" bank=30, shop=365 ,") == {"bank": 30, "shop": 365}
    for bad in ("bank", "bank=x", "=30", "bank=-1"):
        with pytest.raises(ConfigError, match="archive_tenant_retention"):
            parse_tenant_retention(bad)
