"""The policy: turns one event's findings into revocations, per tenant.

Detectors score, the policy decides (a monitor-only deployment is a policy, not a code path).
Per tenant and detector: enabled, a severity override, an action (revoke the session, revoke
the user, step up, block the source, alert only) and threshold overrides. Allowlisted addresses,
networks and users are never acted on (their findings are still published, for the audit trail).

Default rule for findings about the event's own session: one at or above `revoke_at` (high)
acts on its own; findings from two or more detectors at `corroborate_at` (medium) or above in the
same event corroborate each other ("a new network *plus* other evidence is a hijack"). Findings
that name other sessions, a user or a source act when at or above `revoke_at`.

Policies are built in code or loaded from a file (streams/policy_file.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Generic, TypeVar

from producers.contract import Action, Event, EventType, Finding, Revocation, Scope, Severity
from streams.detectors.base import ALERT, BLOCK, REVOKE, REVOKE_USER, STEP_UP, Detector, Signal

# Namespace for deterministic ids: same cause, same id, on every replay.
ID_NAMESPACE = uuid.UUID("6f1d3c1e-5b0a-4c55-9a57-2f1f4a7e9c10")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DetectorRule:
    enabled: bool = True
    # What a decision caused by this detector does: one of the detector's `actions`; None keeps
    # the detector's default.
    action: str | None = None
    # Replaces the severity the detector reports (e.g. "low" to keep it from ever acting).
    severity: Severity | None = None
    # Threshold overrides: field names of the detector's `Params`.
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Allowlist:
    """Sources and users the policy never acts on (CIDRs, network names as enriched, users)."""

    cidrs: tuple[IPNetwork, ...] = ()
    asns: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()

    def exempts(self, event: Event, asn: str | None) -> bool:
        if event.user is not None and event.user in self.users:
            return True
        if asn is not None and asn in self.asns:
            return True
        return bool(self.cidrs) and _in_any(event.ip, self.cidrs)

    def covers_source(self, source: str) -> bool:
        """True if blocking `source` (an address or CIDR) would touch an allowlisted network."""
        if not self.cidrs:
            return False
        net = ipaddress.ip_network(source, strict=False)
        return any(net.version == c.version and net.overlaps(c) for c in self.cidrs)


@dataclass(frozen=True)
class TenantPolicy:
    revoke_at: Severity = Severity.HIGH
    corroborate_at: Severity = Severity.MEDIUM
    corroborating_detectors: int = 2
    monitor_only: bool = False
    # One finding per session (or user, or source) and detector within this much event time.
    dedup_window_s: float = 3600.0
    # How long a source block lasts (Keycloak's lockout waits up to 15 minutes).
    block_s: float = 900.0
    allowlist: Allowlist = field(default_factory=Allowlist)
    detectors: Mapping[str, DetectorRule] = field(default_factory=dict)
    _params: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def rule(self, detector: str) -> DetectorRule:
        return self.detectors.get(detector, _DEFAULT_RULE)

    def params(self, detector: type[Detector[Any]] | Detector[Any]) -> Any:
        """The detector's thresholds for this tenant (defaults with the policy's overrides)."""
        cached = self._params.get(detector.id)
        if cached is None:
            cached = dataclasses.replace(detector.Params(), **self.rule(detector.id).params)
            self._params[detector.id] = cached
        return cached

    def action(self, detector: str, default: str) -> str:
        return self.rule(detector).action or default


_DEFAULT_RULE = DetectorRule()


@dataclass(frozen=True, slots=True)
class Detection:
    """A finding with the signal behind it and the detector's default action."""

    finding: Finding
    signal: Signal
    default_action: str


@dataclass(frozen=True)
class Policy:
    default: TenantPolicy = field(default_factory=TenantPolicy)
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    source: str = "built-in defaults"  # where it came from, for logs

    def for_tenant(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default)

    def enabled(self, tenant: str, detector: str) -> bool:
        return self.for_tenant(tenant).rule(detector).enabled

    def detection(
        self,
        detector: Detector[Any],
        signal: Signal,
        event: Event,
        session: str | None,
        user: str | None,
    ) -> Detection:
        """The finding a detector's signal becomes under the tenant's severity override."""
        rule = self.for_tenant(event.tenant).rule(detector.id)
        finding = Finding(
            id=finding_id(detector.id, event.tenant, event.id),
            tenant=event.tenant,
            session=session,
            user=user,
            ip=event.ip,
            detector=detector.id,
            severity=rule.severity or signal.severity,
            summary=signal.summary,
            evidence=signal.evidence,
            event_time=event.time,
            events=[event.id],
        )
        return Detection(finding, signal, detector.default_action)

    def decide(
        self,
        event: Event,
        detections: Sequence[Detection],
        decided_at: datetime,
        *,
        asn: str | None = None,
        user: str | None = None,
    ) -> list[Revocation]:
        """The revocations these detections call for under the tenant's policy (maybe none)."""
        tp = self.for_tenant(event.tenant)
        if tp.monitor_only or not detections or tp.allowlist.exempts(event, asn):
            return []
        user = user or event.user
        out: list[Revocation] = []
        own: list[tuple[Detection, str]] = []
        for d in detections:
            action = tp.action(d.finding.detector, d.default_action)
            if action == ALERT:
                continue
            if action in (REVOKE, STEP_UP) and d.signal.sessions is None:
                own.append((d, action))
                continue
            if d.finding.severity.rank < tp.revoke_at.rank:
                continue
            if action in (REVOKE, STEP_UP):
                for session in d.signal.sessions or ():
                    out.append(self._revocation(event, decided_at, Scope.SESSION, session, user,
                                                action, [d]))
            elif action == REVOKE_USER and user is not None:
                out.append(self._revocation(event, decided_at, Scope.USER, user, user, action, [d],
                                            not_before=event.time))
            elif action == BLOCK:
                source = d.signal.source or event.ip
                if not tp.allowlist.covers_source(source):
                    out.append(self._revocation(
                        event, decided_at, Scope.SOURCE, source, None, action, [d],
                        expires=event.time + timedelta(seconds=tp.block_s)))
        if own and event.session is not None:
            cause = _own_session_cause(tp, own)
            if cause:
                action = REVOKE if any(a == REVOKE for d, a in own if d in cause) else STEP_UP
                out.insert(0, self._revocation(event, decided_at, Scope.SESSION, event.session,
                                               user, action, cause))
        return out

    @staticmethod
    def _revocation(
        event: Event,
        decided_at: datetime,
        scope: Scope,
        subject: str,
        user: str | None,
        action: str,
        cause: Sequence[Detection],
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> Revocation:
        wire_action = {REVOKE: Action.REVOKE, REVOKE_USER: Action.REVOKE, STEP_UP: Action.STEP_UP,
                       BLOCK: Action.BLOCK}[action]
        detectors = sorted({d.finding.detector for d in cause})
        findings = sorted((d.finding for d in cause), key=lambda f: (-f.severity.rank, f.detector))
        return Revocation(
            id=revocation_id(event.tenant, scope, subject, wire_action, detectors,
                             _cause_key(scope, event, expires)),
            tenant=event.tenant,
            scope=scope,
            session=subject if scope is Scope.SESSION else None,
            user=user,
            source=subject if scope is Scope.SOURCE else None,
            action=wire_action,
            not_before=not_before,
            expires=expires,
            reasons=[f.reason() for f in findings],
            event_time=event.time,
            decided_at=decided_at,
            events=[event.id],
        )


D = TypeVar("D", bound=Detector[Any])


@dataclass(frozen=True, slots=True)
class TenantPlan(Generic[D]):
    """What runs for one tenant: its policy and its enabled detectors with their thresholds."""

    policy: TenantPolicy
    detectors: tuple[tuple[D, Any], ...]   # (detector, params), in the pipeline's order


class DetectorPlans(Generic[D]):
    """The `TenantPlan` for each tenant and event type, worked out once per tenant policy.

    Looking up every detector's rule and params for every event was a tenth of the pipeline's
    time; both are fixed for the life of a `Policy`. A plan also leaves out the detectors that
    cannot fire on the event's type (`Detector.event_types`). Bounded: tenants the policy does
    not list share the default's plans, and there are nine event types.
    """

    def __init__(self, policy: Policy, detectors: Sequence[D]) -> None:
        self.policy = policy
        self.detectors = tuple(detectors)
        self._plans: dict[tuple[str | None, EventType], TenantPlan[D]] = {}

    def for_event(self, tenant: str, event_type: EventType) -> TenantPlan[D]:
        key = (tenant if tenant in self.policy.tenants else None, event_type)
        plan = self._plans.get(key)
        if plan is None:
            tp = self.policy.for_tenant(tenant)
            plan = self._plans[key] = TenantPlan(tp, tuple(
                (d, tp.params(d)) for d in self.detectors
                if tp.rule(d.id).enabled and (d.event_types is None or event_type in d.event_types)
            ))
        return plan


def _own_session_cause(
    tp: TenantPolicy, own: Sequence[tuple[Detection, str]]
) -> list[Detection]:
    strong = [d for d, _ in own if d.finding.severity.rank >= tp.revoke_at.rank]
    corroborating = [d for d, _ in own if d.finding.severity.rank >= tp.corroborate_at.rank]
    if strong:
        return corroborating
    if len({d.finding.detector for d in corroborating}) >= tp.corroborating_detectors:
        return corroborating
    return []


@lru_cache(maxsize=65_536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


def _in_any(ip: str, cidrs: Sequence[IPNetwork]) -> bool:
    addr = _address(ip)
    return any(addr.version == c.version and addr in c for c in cidrs)


def _cause_key(scope: Scope, event: Event, expires: datetime | None) -> str:
    """What makes a decision the same decision on a replay.

    Usually the event that triggered it. A source block is identified by its source and the
    block period it falls in instead (at most one block per source and period): which event of a
    flood tips it is decided in event-time order now (streams/source_order.py), but the period id
    keeps the ids archived before that comparable in a backtest.
    """
    if scope is Scope.SOURCE and expires is not None:
        period = max(expires.timestamp() - event.time.timestamp(), 1.0)
        return f"period:{int(event.time.timestamp() // period)}"
    return event.id


def revocation_id(
    tenant: str,
    scope: Scope,
    subject: str,
    action: Action,
    detectors: Sequence[str],
    cause_key: str,
) -> str:
    cause = "|".join((tenant, scope.value, subject, action.value, ",".join(detectors), cause_key))
    return str(uuid.uuid5(ID_NAMESPACE, "revocation/1|" + cause))


def finding_id(detector: str, tenant: str, event_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"finding/1|{tenant}|{detector}|{event_id}"))
