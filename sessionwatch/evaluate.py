"""Scoring a run against the simulator's truth: recall, precision, benign harm, detection delay.

`score` is a pure function of the truth, the events, the decisions received and their timings, so
it is unit-tested on hand-made inputs; sessionwatch/evaluate_run.py produces its inputs from a real
worker on a broker (or in-process) and `print_report` renders the result.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from producers.contract import Action, Event, Finding, Revocation, Scope
from sessionwatch.simulation.truth import AttackTruth, BenignTruth, Truth
from sessionwatch.simulation.world import IDLE_TIMEOUT_S

# Recall targets per class (the acceptance criteria); other classes use DEFAULT_TARGET.
TARGETS = {"replay_cross_country_tool_ua": 0.99, "replay_cross_country_spoofed_ua": 0.99}
DEFAULT_TARGET = 0.95
BENIGN_REVOKED_TARGET = 0.001


@dataclass
class Observed:
    """What came out of the pipeline: (wall time received, object), in arrival order."""

    revocations: list[tuple[float, Revocation]] = field(default_factory=list)
    findings: list[tuple[float, Finding]] = field(default_factory=list)


@lru_cache(maxsize=65_536)
def _net(source: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(source, strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=262_144)
def covers(source: str, ip: str) -> bool:
    """Whether a block's address or CIDR `source` contains the address `ip`."""
    net = _net(source)
    if net is None:
        return False
    addr = ipaddress.ip_address(ip)
    return addr.version == net.version and addr in net


def hits_attack(rev: Revocation, attack: AttackTruth) -> bool:
    """A decision (made no earlier than the attack began) that hits one of the attack's subjects.

    A source block decided earlier that is still in force when the attack starts counts too: the
    attacker's source was already shut out (a second flood from a provider block blocked minutes
    before for another flood).
    """
    if rev.tenant != attack.tenant and rev.scope != Scope.SOURCE:
        return False
    if rev.event_time.timestamp() < attack.start:
        in_force = (rev.scope == Scope.SOURCE and rev.expires is not None
                    and rev.expires.timestamp() > attack.start)
        if not in_force:
            return False
    if rev.scope == Scope.SESSION:
        return rev.session in attack.sessions
    if rev.scope == Scope.USER:
        return rev.user in attack.victims
    if rev.scope == Scope.SOURCE and rev.source:
        return any(covers(rev.source, ip) for ip in attack.sources)
    return False


def harm(rev: Revocation, session: BenignTruth) -> str | None:
    """How `rev` hits a benign session: "revoke", "step_up", "block" or None."""
    if rev.scope == Scope.SESSION:
        if rev.session in session.hashes and rev.tenant == session.tenant:
            return "step_up" if rev.action == Action.STEP_UP else "revoke"
        return None
    if rev.scope == Scope.USER:
        if rev.user != session.user or rev.tenant != session.tenant or session.authenticated_at is None:
            return None
        if session.end + IDLE_TIMEOUT_S < rev.event_time.timestamp():
            return None  # the app had already expired it: nothing left to revoke
        not_before = (rev.not_before or rev.event_time).timestamp()
        return "revoke" if session.authenticated_at < not_before else None
    if rev.scope == Scope.SOURCE and rev.source:
        begin = rev.event_time.timestamp()
        end = rev.expires.timestamp() if rev.expires else math.inf
        for ip, (first, last) in session.addresses.items():
            if first <= end and last >= begin and covers(rev.source, ip):
                return "block"
    return None


_ByKey = dict[str, list[BenignTruth]]


def _index(sessions: Iterable[BenignTruth]) -> tuple[_ByKey, _ByKey]:
    by_hash: dict[str, list[BenignTruth]] = defaultdict(list)
    by_user: dict[str, list[BenignTruth]] = defaultdict(list)
    for s in sessions:
        for h in s.hashes:
            by_hash[h].append(s)
        by_user[s.user].append(s)
    return by_hash, by_user


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# Detectors whose revocations the user asked for (ending other sessions after a password change).
REQUESTED_BY_USER = frozenset({"user.credential_change"})


def score(truth: Truth, events: Sequence[Event], observed: Observed,
          sent: dict[str, float] | None = None) -> dict[str, Any]:
    """The evaluation report as plain data (JSON-able)."""
    sent = sent or {}
    order = {e.id: i for i, e in enumerate(events)}
    malicious = {eid: a.id for a in truth.attacks for eid in a.events}
    revs: list[tuple[float, Revocation]] = []
    seen: set[str] = set()
    for at, rev in observed.revocations:
        if rev.id not in seen:  # at-least-once delivery: a redelivered decision counts once
            seen.add(rev.id)
            revs.append((at, rev))
    by_hash, by_user = _index(truth.benign)
    sources = [s for s in truth.benign if s.addresses]

    def benign_hits(rev: Revocation) -> dict[str, str]:
        """benign session id -> how it was hit."""
        if rev.scope == Scope.SESSION:
            cands: Iterable[BenignTruth] = by_hash.get(rev.session or "", [])
        elif rev.scope == Scope.USER:
            cands = by_user.get(rev.user or "", [])
        else:
            cands = sources
        out = {}
        for s in cands:
            how = harm(rev, s)
            if how is not None:
                out[s.session] = how
        return out

    def trigger_pos(rev: Revocation) -> float:
        return order.get(rev.events[0], math.inf) if rev.events else math.inf

    # -- attacks -------------------------------------------------------------------------------
    caught_by: dict[str, list[tuple[float, Revocation]]] = defaultdict(list)
    rev_attack_hits: dict[str, set[str]] = defaultdict(set)
    for at, rev in revs:
        for attack in truth.attacks:
            if hits_attack(rev, attack):
                caught_by[attack.id].append((at, rev))
                rev_attack_hits[rev.id].add(attack.id)
    classes: dict[str, dict[str, Any]] = {}
    for cls in sorted({a.cls for a in truth.attacks}):
        instances = [a for a in truth.attacks if a.cls == cls]
        delays_ev: list[float] = []
        delays_ms: list[float] = []
        caught = 0
        detectors: Counter[str] = Counter()
        for a in instances:
            hits = caught_by.get(a.id)
            if not hits:
                continue
            caught += 1
            at, first = min(hits, key=lambda h: (trigger_pos(h[1]), h[0]))
            for reason in first.reasons:
                detectors[reason.detector] += 1
            pos = trigger_pos(first)
            if pos == math.inf:
                t = first.event_time.timestamp()
                n = sum(1 for eid in a.events if events[order[eid]].time.timestamp() <= t)
            else:
                n = sum(1 for eid in a.events if order[eid] <= pos)
            delays_ev.append(n)
            if first.events and first.events[0] in sent:
                delays_ms.append((at - sent[first.events[0]]) * 1000)
        target = TARGETS.get(cls, DEFAULT_TARGET)
        recall = caught / len(instances) if instances else 0.0
        classes[cls] = {
            "instances": len(instances), "caught": caught, "recall": recall, "target": target,
            "meets_target": recall >= target, "first_detectors": dict(detectors),
            "delay_events_p50": percentile(delays_ev, 50), "delay_events_p95": percentile(delays_ev, 95),
            "delay_ms_p50": percentile(delays_ms, 50), "delay_ms_p95": percentile(delays_ms, 95),
        }

    # -- benign --------------------------------------------------------------------------------
    revoked: dict[str, str] = {}      # session -> first harm that ends it (revoke/block)
    stepped: set[str] = set()
    hit_detectors: dict[str, Counter[str]] = defaultdict(Counter)  # kind -> detector -> sessions
    rev_benign_hits: dict[str, int] = {}
    kind_of = {s.session: s.kind for s in truth.benign}
    # Sessions ended because their user changed a password are what ASVS 7.4.3 asks for, not a
    # false positive: they are reported on their own line.
    by_request: set[str] = set()
    for _, rev in revs:
        hits = benign_hits(rev)
        rev_benign_hits[rev.id] = len(hits)
        requested = {r.detector for r in rev.reasons} <= REQUESTED_BY_USER
        for sid, how in hits.items():
            if requested:
                by_request.add(sid)
                continue
            if how == "step_up":
                stepped.add(sid)
            elif sid not in revoked:
                revoked[sid] = how
            for reason in rev.reasons:
                hit_detectors[kind_of[sid]][reason.detector] += 1
    kinds: dict[str, dict[str, Any]] = {}
    for s in truth.benign:
        k = kinds.setdefault(s.kind, {"sessions": 0, "revoked": 0, "stepped_up": 0})
        k["sessions"] += 1
        k["revoked"] += s.session in revoked
        k["stepped_up"] += s.session in stepped and s.session not in revoked
    for kind, counter in hit_detectors.items():
        kinds[kind]["detectors"] = dict(counter)
    total = len(truth.benign)
    benign = {
        "sessions": total, "revoked": len(revoked),
        "revoked_pct": 100.0 * len(revoked) / total if total else 0.0,
        "stepped_up": len(stepped - set(revoked)),
        "ended_after_credential_change": len(by_request - set(revoked)),
        "by_how": dict(Counter(revoked.values())),
        "meets_target": (len(revoked) / total if total else 0.0) <= BENIGN_REVOKED_TARGET,
        "by_kind": kinds,
    }

    # -- detectors -----------------------------------------------------------------------------
    det: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "findings": 0, "findings_on_attacks": 0, "findings_on_benign": 0, "revocations": 0,
        "revocations_on_attacks": 0, "revocations_on_benign": 0, "caught": 0})
    for _, f in observed.findings:
        d = det[f.detector]
        d["findings"] += 1
        if f.events and f.events[0] in malicious:
            d["findings_on_attacks"] += 1
        else:
            d["findings_on_benign"] += 1
    caught_detectors: dict[str, set[str]] = defaultdict(set)
    for _, rev in revs:
        names = {r.detector for r in rev.reasons}
        for name in names:
            d = det[name]
            d["revocations"] += 1
            d["revocations_on_attacks"] += bool(rev_attack_hits.get(rev.id))
            d["revocations_on_benign"] += bool(rev_benign_hits.get(rev.id))
            caught_detectors[name].update(rev_attack_hits.get(rev.id, ()))
    for name, d in det.items():
        subject = d["revocations_on_attacks"] + d["revocations_on_benign"]
        d["precision"] = d["revocations_on_attacks"] / subject if subject else None
        fsubject = d["findings_on_attacks"] + d["findings_on_benign"]
        d["finding_precision"] = d["findings_on_attacks"] / fsubject if fsubject else None
        d["caught"] = len(caught_detectors[name])
        per_class = Counter(a.cls for a in truth.attacks if a.id in caught_detectors[name])
        d["caught_by_class"] = dict(per_class)

    all_caught = sum(c["caught"] for c in classes.values())
    return {
        "events": len(events), "attacks": len(truth.attacks), "caught": all_caught,
        "revocations": len(revs), "findings": len(observed.findings),
        "classes": classes, "benign": benign, "detectors": dict(sorted(det.items())),
        "revocation_ids": sorted(seen),
    }


def _f(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Render `score`'s report with rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    run = report.get("run", {})
    sim = report.get("simulation", {})
    console.print(f"[bold]sessionwatch evaluate[/]: {report['events']} events, "
                  f"{sim.get('benign_sessions', report['benign']['sessions'])} benign sessions, "
                  f"{report['attacks']} attack instances; mode {run.get('mode', '?')}, "
                  f"{run.get('events_per_s', '?')} events/s"
                  + ("" if run.get("caught_up", True) else
                     " [red](the worker had NOT caught up when scoring)[/]"))
    t = Table(title="recall per attack class")
    for col in ("class", "caught", "recall", "target", "delay events p50/p95", "delay ms p50/p95",
                "first caught by"):
        t.add_column(col, justify="left" if col in ("class", "first caught by") else "right")
    for cls, c in report["classes"].items():
        mark = "[green]" if c["meets_target"] else "[red]"
        t.add_row(cls, f"{c['caught']}/{c['instances']}", f"{mark}{c['recall']:.3f}[/]",
                  f"{c['target']:.2f}",
                  f"{_f(c['delay_events_p50'])} / {_f(c['delay_events_p95'])}",
                  f"{_f(c['delay_ms_p50'])} / {_f(c['delay_ms_p95'])}",
                  ", ".join(f"{k} {v}" for k, v in sorted(c["first_detectors"].items())))
    console.print(t)
    t = Table(title="per detector")
    for col in ("detector", "findings (attack/benign)", "finding precision", "revocations",
                "on attacks", "on benign", "precision", "instances caught"):
        t.add_column(col, justify="left" if col == "detector" else "right")
    for name, d in report["detectors"].items():
        t.add_row(name, f"{d['findings']} ({d['findings_on_attacks']}/{d['findings_on_benign']})",
                  _f(d["finding_precision"], ".3f"), str(d["revocations"]),
                  str(d["revocations_on_attacks"]), str(d["revocations_on_benign"]),
                  _f(d["precision"], ".3f"), str(d["caught"]))
    console.print(t)
    b = report["benign"]
    t = Table(title="benign sessions by kind")
    for col in ("kind", "sessions", "revoked", "stepped up", "hit by"):
        t.add_column(col, justify="left" if col in ("kind", "hit by") else "right")
    for kind, k in sorted(b["by_kind"].items()):
        t.add_row(kind, str(k["sessions"]), str(k["revoked"]), str(k["stepped_up"]),
                  ", ".join(f"{n} {v}" for n, v in sorted(k.get("detectors", {}).items())))
    mark = "[green]" if b["meets_target"] else "[red]"
    t.add_row("[bold]all", str(b["sessions"]), f"{mark}{b['revoked']} ({b['revoked_pct']:.3f} %)[/]",
              str(b["stepped_up"]), ", ".join(f"{k} {v}" for k, v in sorted(b["by_how"].items())))
    console.print(t)
    console.print(f"benign sessions ended because their user changed a password (ASVS 7.4.3, "
                  f"not counted as false): {b.get('ended_after_credential_change', 0)}")
    if "with_model" in report:
        _print_model_columns(report, console)
    det = report.get("determinism")
    if det is not None:
        verdict = "[green]identical[/]" if det["identical"] else "[red]DIFFERENT[/]"
        console.print(f"determinism: revocation ids of two runs {verdict} "
                      f"({det['first']} / {det['second']}; only first {det['only_first']}, "
                      f"only second {det['only_second']})")


def _print_model_columns(report: dict[str, Any], console: Any) -> None:
    """Rules alone beside rules + the learned score (`evaluate --model`)."""
    from rich.table import Table

    m = report["with_model"]
    t = Table(title=f"rules alone vs rules + model ({m['model']})")
    for col in ("class", "rules", "rules + model", "first caught by (with model)"):
        t.add_column(col, justify="left" if col.startswith(("class", "first")) else "right")
    for cls, c in report["classes"].items():
        w = m["classes"].get(cls, {})
        t.add_row(cls, f"{c['caught']}/{c['instances']} {c['recall']:.3f}",
                  f"{w.get('caught', 0)}/{w.get('instances', 0)} {w.get('recall', 0.0):.3f}",
                  ", ".join(f"{k} {v}" for k, v in sorted(w.get("first_detectors", {}).items())))
    b, wb = report["benign"], m["benign"]
    t.add_row("[bold]benign revoked", f"{b['revoked']}/{b['sessions']}",
              f"{wb['revoked']}/{wb['sessions']}", "")
    t.add_row("[bold]benign stepped up", f"{b['stepped_up']}/{b['sessions']}",
              f"{wb['stepped_up']}/{wb['sessions']} "
              f"({100.0 * wb['stepped_up'] / max(1, wb['sessions']):.3f} %)", "")
    console.print(t)
    kinds = Table(title="benign kinds the model stepped up or revoked")
    for col in ("kind", "sessions", "revoked (rules / +model)", "stepped up (rules / +model)"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in sorted(wb["by_kind"].items()):
        r = b["by_kind"].get(kind, {})
        if k["revoked"] != r.get("revoked") or k["stepped_up"] != r.get("stepped_up"):
            kinds.add_row(kind, str(k["sessions"]), f"{r.get('revoked', 0)} / {k['revoked']}",
                          f"{r.get('stepped_up', 0)} / {k['stepped_up']}")
    console.print(kinds)
