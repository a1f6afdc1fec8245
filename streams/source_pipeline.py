"""The pure per-source pipeline: floods of rejected tokens, new sessions and failed logins.

Fed by the source agent from `<app_id>-by-source` (keyed tenant + network, so an address, its
prefix and its network are all counted on one partition). Every event comes through, valid ones
too: the share of valid traffic keeps a busy office NAT from being blocked for its stale cookies,
and a valid session used from a blocked source is revoked (`source.session_from_blocked`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from producers.contract import Event, EventType, Finding, Revocation, Scope
from streams.detectors import SOURCE_DETECTORS, SourceContext, SourceDetector
from streams.enrich import Enricher, network_prefix
from streams.policy import Detection, Policy
from streams.source_state import LIVE_TYPES, Counters, SourceState


@dataclass
class SourceOutcome:
    findings: list[Finding] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)


def source_key(event: Event, network_name: str | None) -> bytes:
    """Partition key: the network when known (so all its levels meet), else the prefix."""
    return f"{event.tenant}\x1f{network_name or network_prefix(event.ip)}".encode()


class SourcePipeline:
    def __init__(
        self,
        enricher: Enricher,
        policy: Policy | None = None,
        detectors: Sequence[SourceDetector] | None = None,
    ) -> None:
        self.enricher = enricher
        self.policy = policy or Policy()
        self.state = SourceState()
        self.detectors = list(detectors) if detectors is not None else [
            d() for d in SOURCE_DETECTORS
        ]

    def process(self, event: Event, decided_at: datetime) -> SourceOutcome:
        now = event.time.timestamp()
        network = self.enricher.network(event.ip)
        prefix = network_prefix(event.ip)
        windows = self.state.windows(event.tenant, event.ip, prefix, network.asn, network.asn_cidr,
                                     network.kind, now)
        for level in windows.levels():
            _count(level.counters, event, now)
        tp = self.policy.for_tenant(event.tenant)
        ctx = SourceContext(event=event, network=network, prefix=prefix, windows=windows)
        detections: list[Detection] = []
        for detector in self.detectors:
            if not tp.rule(detector.id).enabled:
                continue
            signal = detector.evaluate(ctx, tp.params(detector))
            if signal is None:
                continue
            subject = signal.source or event.session or event.ip
            dedup = f"{event.tenant}|{detector.id}|{subject}"
            last = self.state.flagged.get(dedup)
            if last is not None and now - last < tp.dedup_window_s:
                continue
            self.state.flagged[dedup] = now
            self.state.flagged.move_to_end(dedup)
            detections.append(self.policy.detection(detector, signal, event, event.session,
                                                    event.user))
        if not detections:
            return SourceOutcome()
        revocations = self.policy.decide(event, detections, decided_at, asn=network.asn)
        for revocation in revocations:
            if revocation.scope is Scope.SOURCE and revocation.source and revocation.expires:
                self.state.block(event.tenant, revocation.source, revocation.expires.timestamp())
        return SourceOutcome(findings=[d.finding for d in detections], revocations=revocations)


def _count(counters: Counters, event: Event, now: float) -> None:
    kind = event.type
    if kind is EventType.TOKEN_REJECTED:
        counters.rejected.add(event.session or event.id, now)
    elif kind is EventType.CREATED:
        counters.created.add(event.session or event.id, now)
    elif kind is EventType.AUTH_FAILED:
        counters.failed.add(event.user or event.id, now)
    elif kind in LIVE_TYPES and event.session is not None:
        counters.valid.add(event.session, now)
        if kind is EventType.AUTHENTICATED and event.user is not None:
            counters.logins.add(event.user, now)
