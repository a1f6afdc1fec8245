"""Contract objects -> archive rows (column name -> Python value), pure and deterministic.

Absent strings become '', times stay aware datetimes in UTC (the backend converts), JSON
columns are compact with sorted keys (so a redelivered object yields an identical row), and
addresses are canonical (IPv4-mapped IPv6 as IPv4, IPv6 compressed lower case), so both
backends store and return the same text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec

from producers.contract import Event, Finding, Revocation
from storage.clickhouse.schema import ENRICHMENT_COLUMNS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_json = msgspec.json.Encoder(order="sorted")


def event_row(event: Event, enrichment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A row of `sessionwatch.events`; `enrichment` fills country, asn, network_kind, client."""
    # One dict literal, no per-row validation loops: this runs for every archived event
    # (benchmarks/archive.py); enrichment keys are checked in `check_enrichment` once instead.
    get = enrichment.get if enrichment else _no_enrichment
    return {
        "id": event.id,
        "tenant": event.tenant,
        "type": event.type.value,
        "time": event.time.astimezone(UTC),
        "time_ms": epoch_ms(event.time),
        "session": event.session or "",
        "user": event.user or "",
        "ip": canonical_ip(event.ip),
        "user_agent": event.user_agent or "",
        "attrs": _json.encode(event.attrs).decode() if event.attrs else "{}",
        "country": get("country") or "",
        "asn": get("asn") or "",
        "network_kind": get("network_kind") or "",
        "client": get("client") or "",
    }


def _no_enrichment(_name: str) -> str:
    return ""


def check_enrichment(enrichment: Mapping[str, str]) -> None:
    """Raise if an enrichment function returns columns the events table does not have."""
    unknown = set(enrichment) - set(ENRICHMENT_COLUMNS)
    if unknown:
        raise ValueError(f"enrichment: unknown columns {sorted(unknown)}; events have "
                         f"{', '.join(ENRICHMENT_COLUMNS)}")


def finding_row(finding: Finding) -> dict[str, Any]:
    """A row of `sessionwatch.findings`."""
    return {
        "id": finding.id,
        "tenant": finding.tenant,
        "session": finding.session or "",
        "user": finding.user or "",
        "ip": canonical_ip(finding.ip),
        "detector": finding.detector,
        "severity": finding.severity.value,
        "summary": finding.summary,
        "evidence": _json.encode(finding.evidence).decode(),
        "event_time": finding.event_time.astimezone(UTC),
        "time_ms": epoch_ms(finding.event_time),
        "events": list(finding.events),
    }


def revocation_row(revocation: Revocation) -> dict[str, Any]:
    """A row of `sessionwatch.revocations`; `not_before`/`expires` are None (NULL) when absent."""
    reasons = revocation.reasons
    top = max(reasons, key=lambda r: r.severity.rank) if reasons else None
    return {
        "id": revocation.id,
        "tenant": revocation.tenant,
        "scope": revocation.scope.value,
        "session": revocation.session or "",
        "user": revocation.user or "",
        "source": revocation.source or "",
        "action": revocation.action.value,
        "not_before": _optional_utc(revocation.not_before),
        "expires": _optional_utc(revocation.expires),
        "detectors": sorted({r.detector for r in reasons}),
        "severity": top.severity.value if top else "",
        # Summaries only: the evidence is in `findings`, one row per detector and event.
        "reasons": _json.encode([{"detector": r.detector, "severity": r.severity.value,
                                  "summary": r.summary} for r in reasons]).decode(),
        "event_time": revocation.event_time.astimezone(UTC),
        "decided_at": revocation.decided_at.astimezone(UTC),
        "time_ms": epoch_ms(revocation.event_time),
        "events": list(revocation.events),
    }


def epoch_ms(time: datetime) -> int:
    """Milliseconds since the epoch, floored, exact (no float rounding)."""
    return (time - _EPOCH) // _MS


def _optional_utc(time: datetime | None) -> datetime | None:
    return None if time is None else time.astimezone(UTC)


@lru_cache(maxsize=65_536)
def canonical_ip(ip: str) -> str:
    """The one text form of an address; text that is no address is returned unchanged."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@lru_cache(maxsize=65_536)
def truncate_ip(ip: str, v4_bits: int = 24, v6_bits: int = 48) -> str:
    """The address with only its network part kept (privacy option): 73.162.10.20 ->
    73.162.10.0, 2001:db8:1:2::5 -> 2001:db8:1::. Text that is no address becomes '': what
    cannot be truncated is not stored."""
    if not 0 <= v4_bits <= 32 or not 0 <= v6_bits <= 128:
        raise ValueError(f"truncate_ip: v4_bits {v4_bits} must be 0-32, v6_bits {v6_bits} 0-128")
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = v4_bits if address.version == 4 else v6_bits
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False).network_address)
