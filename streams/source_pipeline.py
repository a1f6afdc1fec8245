"""The pure per-source pipeline: floods of rejected tokens, new sessions and failed logins.

Fed by the source stage from `<app_id>-by-source` (keyed tenant + network, so an address, its
prefix and its network are all counted on one partition). Every event comes through, valid ones
too: the share of valid traffic keeps a busy office NAT from being blocked for its stale cookies,
and a valid session used from a blocked source is revoked (`source.session_from_blocked`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from producers.contract import Event, EventType, Finding, Revocation, Scope
from streams.detectors import SOURCE_DETECTORS, SourceContext, SourceDetector
from streams.enrich import Enricher, network_prefix
from streams.policy import Detection, DetectorPlans, Policy
from streams.source_state import LIVE_TYPES, Level, SourceState


# A msgspec Struct rather than a dataclass: one is built for every event.
class SourceOutcome(msgspec.Struct):
    findings: list[Finding] = msgspec.field(default_factory=list)
    revocations: list[Revocation] = msgspec.field(default_factory=list)
    # Set by streams/source_order.py when the pipeline failed on the event (it is dead-lettered).
    error: str | None = None


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
        self._plans = DetectorPlans(self.policy, self.detectors)  # per tenant, set up once

    def process(self, event: Event, decided_at: datetime) -> SourceOutcome:
        now = event.time.timestamp()
        network = self.enricher.network(event.ip)
        prefix = network_prefix(event.ip)
        windows = self.state.windows(event.tenant, event.ip, prefix, network.asn, network.asn_cidr,
                                     network.kind, now)
        _count(windows.levels(), event, now)
        plan = self._plans.for_event(event.tenant, event.type)
        ctx = SourceContext(event=event, network=network, prefix=prefix, windows=windows, now=now)
        detections: list[Detection] = []
        for detector, params in plan.detectors:
            signal = detector.evaluate(ctx, params)
            if signal is None:
                continue
            subject = signal.source or event.session or event.ip
            dedup = f"{event.tenant}|{detector.id}|{subject}"
            last = self.state.flagged.get(dedup)
            if last is not None and now - last < plan.policy.dedup_window_s:
                continue
            self.state.flag(dedup, now)
            detections.append(self.policy.detection(detector, signal, event, event.session,
                                                    event.user))
        if not detections:
            return SourceOutcome()
        revocations = self.policy.decide(event, detections, decided_at, asn=network.asn)
        for revocation in revocations:
            if revocation.scope is Scope.SOURCE and revocation.source and revocation.expires:
                self.state.block(event.tenant, revocation.source, revocation.expires.timestamp())
        return SourceOutcome(findings=[d.finding for d in detections], revocations=revocations)


def _count(levels: tuple[Level, ...], event: Event, now: float) -> None:
    """Count the event in its kind's window at every level of its source."""
    kind = event.type
    if kind is EventType.TOKEN_REJECTED:
        item = event.session or event.id
        for level in levels:
            level.counters.rejected.add(item, now)
    elif kind is EventType.CREATED:
        item = event.session or event.id
        for level in levels:
            level.counters.created.add(item, now)
    elif kind is EventType.AUTH_FAILED:
        item = event.user or event.id
        for level in levels:
            level.counters.failed.add(item, now)
    elif kind in LIVE_TYPES and event.session is not None:
        login = event.user if kind is EventType.AUTHENTICATED else None
        for level in levels:
            level.counters.valid.add(event.session, now)
            if login is not None:
                level.counters.logins.add(login, now)
