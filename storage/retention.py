"""Retention: how long each tenant's archive is kept, turned into what to drop or delete.

Day partitions hold every tenant, so whole days go only once the tenant kept longest no longer
needs them (`DROP PARTITION`: cheap). Tenants kept for less lose their older rows by a
`DELETE` mutation (rewrites parts: run it hourly, not per batch). 0 days means keep forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from producers.errors import ConfigError

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Deletion:
    cutoff_ms: int
    tenants: tuple[str, ...] = ()          # these tenants...
    except_tenants: tuple[str, ...] = ()   # ...or every tenant but these


@dataclass(frozen=True)
class RetentionPlan:
    drop_before: date | None               # day partitions older than this go, for everyone
    deletions: tuple[Deletion, ...]


def parse_tenant_retention(text: str) -> dict[str, int]:
    """"bank=30,shop=365" -> {"bank": 30, "shop": 365}; errors name the setting."""
    out: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        tenant, sep, days = item.partition("=")
        if not sep or not tenant.strip() or not days.strip().isdigit():
            raise ConfigError(f"archive_tenant_retention: {item!r} is not tenant=days "
                              "(e.g. bank=30,shop=365; 0 keeps forever)")
        out[tenant.strip()] = int(days)
    return out


def plan(now: datetime, default_days: int, tenant_days: Mapping[str, int]) -> RetentionPlan:
    """What to drop and delete at `now` (aware) for these retentions (0 = forever)."""
    now_ms = int(now.timestamp() * 1000)
    all_days = [default_days, *tenant_days.values()]
    forever = any(d == 0 for d in all_days)
    longest = 0 if forever else max(all_days)
    drop_before = None if forever else (now - timedelta(days=longest)).date()
    deletions: list[Deletion] = []
    for tenant, days in sorted(tenant_days.items()):
        if days and (forever or days < longest):
            deletions.append(Deletion(now_ms - days * DAY_MS, tenants=(tenant,)))
    if default_days and (forever or default_days < longest):
        deletions.append(Deletion(now_ms - default_days * DAY_MS,
                                  except_tenants=tuple(sorted(tenant_days))))
    return RetentionPlan(drop_before, tuple(deletions))
