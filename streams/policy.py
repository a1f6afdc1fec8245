"""The policy: turns one event's findings into at most one revocation, per tenant.

Detectors score, the policy decides (a monitor-only deployment is a policy, not a code path).
Default rule: a finding at or above `revoke_at` (high) revokes on its own; findings from two or
more detectors at medium or above in the same event corroborate each other and revoke too
("a new network *plus* other evidence is a hijack"). Everything else is published as findings
only, for admins and for the archive.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from producers.contract import (
    Action,
    Event,
    Finding,
    Revocation,
    Scope,
    Severity,
)

# Namespace for deterministic ids: same cause, same id, on every replay.
ID_NAMESPACE = uuid.UUID("6f1d3c1e-5b0a-4c55-9a57-2f1f4a7e9c10")


@dataclass(frozen=True)
class DetectorRule:
    enabled: bool = True
    # What a decision caused by this detector does: "revoke", "step_up" or "alert" (no decision).
    action: str = "revoke"


@dataclass(frozen=True)
class TenantPolicy:
    revoke_at: Severity = Severity.HIGH
    corroborate_at: Severity = Severity.MEDIUM
    corroborating_detectors: int = 2
    monitor_only: bool = False
    detectors: Mapping[str, DetectorRule] = field(default_factory=dict)

    def rule(self, detector: str) -> DetectorRule:
        return self.detectors.get(detector, _DEFAULT_RULE)


_DEFAULT_RULE = DetectorRule()


@dataclass(frozen=True)
class Policy:
    default: TenantPolicy = field(default_factory=TenantPolicy)
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default)

    def enabled(self, tenant: str, detector: str) -> bool:
        return self.for_tenant(tenant).rule(detector).enabled

    def decide(
        self, event: Event, findings: Sequence[Finding], decided_at: datetime
    ) -> Revocation | None:
        """The session revocation these findings call for under the tenant's policy, or None."""
        tp = self.for_tenant(event.tenant)
        if tp.monitor_only or not findings or event.session is None:
            return None
        acting = [f for f in findings if tp.rule(f.detector).action != "alert"]
        strong = [f for f in acting if f.severity.rank >= tp.revoke_at.rank]
        corroborating = [f for f in acting if f.severity.rank >= tp.corroborate_at.rank]
        if strong:
            cause = corroborating
        elif len({f.detector for f in corroborating}) >= tp.corroborating_detectors:
            cause = corroborating
        else:
            return None
        actions = {tp.rule(f.detector).action for f in cause}
        action = Action.REVOKE if "revoke" in actions else Action.STEP_UP
        detectors = sorted({f.detector for f in cause})
        return Revocation(
            id=revocation_id(event.tenant, Scope.SESSION, event.session, action, detectors, event.id),
            tenant=event.tenant,
            scope=Scope.SESSION,
            session=event.session,
            user=event.user,
            source=None,
            action=action,
            not_before=None,
            expires=None,
            reasons=[f.reason() for f in sorted(cause, key=lambda f: (-f.severity.rank, f.detector))],
            event_time=event.time,
            decided_at=decided_at,
            events=[event.id],
        )


def revocation_id(
    tenant: str,
    scope: Scope,
    subject: str,
    action: Action,
    detectors: Sequence[str],
    event_id: str,
) -> str:
    cause = "|".join((tenant, scope.value, subject, action.value, ",".join(detectors), event_id))
    return str(uuid.uuid5(ID_NAMESPACE, "revocation/1|" + cause))


def finding_id(detector: str, tenant: str, event_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"finding/1|{tenant}|{detector}|{event_id}"))
