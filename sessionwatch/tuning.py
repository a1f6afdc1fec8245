"""Policy tuning on archived traffic: a detector threshold swept through the backtest
(sessionwatch/replay.py), each decision matched with the analysts' verdicts, and a backtest's
result as one table (for notebooks/tune_policy.ipynb and the console).

A decision's verdict: the verdict on an archived revocation of the same tenant, scope and
subject (storage.fleet.subject_verdicts); else, for a session, its label from
storage.feedback.session_labels (verdicts on its findings too); else none. `benign` counts the
dismissed decisions; a decision without a verdict is `unjudged`, neither benign nor confirmed;
`not_confirmed` (benign + unjudged) bounds the benign ones from above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from producers.contract import Event
from sessionwatch.replay import BacktestResult, Decided, backtest

SWEEP_COLUMNS = ["value", "decisions", "confirmed", "benign", "unjudged", "not_confirmed", "added",
                 "removed", "by_detector"]


def with_param(policy: Any, detector: str, param: str, value: Any) -> Any:
    """`policy` (None: the built-in one) with `detector`'s `param` set to `value` for the
    default and every tenant (a tenant's own value of it is replaced too)."""
    import streams.detectors
    from streams.policy import Policy, TenantPolicy

    known = streams.detectors.BY_ID.get(detector)
    if known is None:
        raise ValueError(f"detector: no detector {detector!r}; known: "
                         f"{', '.join(sorted(streams.detectors.BY_ID))}")
    names = [f.name for f in dataclasses.fields(known.Params)] \
        if dataclasses.is_dataclass(known.Params) else []
    if param not in names:
        raise ValueError(f"param: {detector} has no parameter {param!r}; its parameters: "
                         f"{', '.join(names) or 'none'}")
    dataclasses.replace(known.Params(), **{param: value})  # its own checks, now

    def tuned(tp: TenantPolicy) -> TenantPolicy:
        rule = tp.rule(detector)
        rules = {**tp.detectors, detector: dataclasses.replace(
            rule, params={**rule.params, param: value})}
        # `_params` caches resolved thresholds: the copy must start without the old ones.
        return dataclasses.replace(tp, detectors=rules, _params={})

    policy = policy or Policy()
    return dataclasses.replace(
        policy, default=tuned(policy.default),
        tenants={name: tuned(tp) for name, tp in policy.tenants.items()},
        source=f"{policy.source} with {detector}.{param}={value}")


def default_param(policy: Any, detector: str, param: str, tenant: str | None = None) -> Any:
    """The value `policy` (None: built-in) gives `detector`'s `param` for `tenant` (or the
    default)."""
    import streams.detectors
    from streams.policy import Policy

    policy = policy or Policy()
    tp = policy.for_tenant(tenant) if tenant else policy.default
    return getattr(tp.params(streams.detectors.BY_ID[detector]), param)


def verdict_lookup(subjects: pd.DataFrame, labels: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(tenant, scope, subject) -> 'confirmed' | 'dismissed', from
    storage.fleet.subject_verdicts and storage.feedback.session_labels."""
    found = {(str(t), "session", str(s)): str(v)
             for t, s, v in zip(labels["tenant"], labels["session"], labels["label"], strict=True)}
    # A verdict on a revocation of the very subject says more than one on its findings.
    found.update({(str(t), str(sc), str(su)): str(v) for t, sc, su, v in zip(
        subjects["tenant"], subjects["scope"], subjects["subject"], subjects["verdict"],
        strict=True)})
    return found


def decisions_table(result: BacktestResult,
                    verdicts: Mapping[tuple[str, str, str], str] | None = None) -> pd.DataFrame:
    """A backtest's decisions, one row per subject and action: change ('same' | 'added' by the
    new policy | 'removed' by it), tenant, scope, subject, action, detectors (the new policy's
    where it decided), revocations, first (event time, UTC) and verdict ('' when none)."""
    rows: list[dict[str, Any]] = []

    def add(change: str, d: Decided) -> None:
        rows.append({"change": change, "tenant": d.tenant, "scope": d.scope, "subject": d.subject,
                     "action": d.action, "detectors": ", ".join(d.detectors),
                     "revocations": d.revocations, "first_ms": d.first_ms,
                     "verdict": (verdicts or {}).get((d.tenant, d.scope, d.subject), "")})

    for _, new in result.both:
        add("same", new)
    for d in result.only_new:
        add("added", d)
    for d in result.only_before:
        add("removed", d)
    columns = ["change", "tenant", "scope", "subject", "action", "detectors", "revocations",
               "first", "verdict"]
    frame = pd.DataFrame(rows, columns=[*columns[:7], "first_ms", "verdict"])
    # Nanoseconds, as the archive's queries return times (pandas 3 would pick microseconds).
    frame.insert(7, "first", pd.to_datetime(frame.pop("first_ms").astype("int64"), unit="ms",
                                            utc=True).astype("datetime64[ns, UTC]"))
    order = {"added": 0, "removed": 1, "same": 2}
    return (frame.sort_values(["change", "first", "tenant", "subject"],
                              key=lambda c: c.map(order) if c.name == "change" else c,
                              kind="stable").reset_index(drop=True))


def threshold_sweep(events: Sequence[Event], archived: Iterable[Mapping[str, Any]], detector: str,
                    param: str, values: Iterable[Any], policy: Any = None,
                    verdicts: Mapping[tuple[str, str, str], str] | None = None,
                    enricher: Any = None) -> pd.DataFrame:
    """Backtest `events` once per value of `detector`'s `param` (on top of `policy`) and count
    the decisions: value, decisions (subject and action, as the backtest matches them),
    confirmed / benign (dismissed) / unjudged by `verdicts` (`verdict_lookup`), not_confirmed
    (benign + unjudged: the most that can be benign), added and
    removed against `archived` (storage.replay.read_revocations), and by_detector (decisions
    the swept detector took part in). `attrs` holds detector, param and the policy's own value.
    """
    from streams.enrich import Enricher

    enricher = enricher or Enricher()  # one for every run: opening the GeoIP files is the cost
    archived = list(archived)
    rows = []
    for value in values:
        result = backtest(events, with_param(policy, detector, param, value), archived, enricher)
        decided = [new for _, new in result.both] + list(result.only_new)
        judged = [(verdicts or {}).get((d.tenant, d.scope, d.subject), "") for d in decided]
        rows.append({"value": value, "decisions": len(decided),
                     "confirmed": judged.count("confirmed"), "benign": judged.count("dismissed"),
                     "unjudged": judged.count(""),
                     "not_confirmed": len(judged) - judged.count("confirmed"),
                     "added": len(result.only_new),
                     "removed": len(result.only_before),
                     "by_detector": sum(detector in d.detectors for d in decided)})
    sweep = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    sweep.attrs.update(detector=detector, param=f"{detector}.{param}",
                       current=default_param(policy, detector, param))
    return sweep


def detector_changes(result: BacktestResult) -> pd.DataFrame:
    """Revocations each detector took part in, archived ("before") and under the backtested
    policy ("new"): detector, before, new, change. Largest change first, then by detector."""
    names = sorted({*result.detectors_before, *result.detectors_new})
    frame = pd.DataFrame({"detector": names,
                          "before": [result.detectors_before.get(d, 0) for d in names],
                          "new": [result.detectors_new.get(d, 0) for d in names]},
                         columns=["detector", "before", "new"])
    frame[["before", "new"]] = frame[["before", "new"]].astype("int64")
    frame["change"] = frame["new"] - frame["before"]
    return (frame.assign(_size=frame["change"].abs())
            .sort_values(["_size", "detector"], ascending=[False, True], kind="stable")
            .drop(columns="_size").reset_index(drop=True))
