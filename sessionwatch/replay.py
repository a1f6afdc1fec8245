"""`sessionwatch replay`: archived events re-published to a topic, or a policy backtested on them.

The backtest runs a range of archived events through `streams.local.LocalRunner` (as `evaluate
--offline` does) and compares what the policy decides with the revocations archived for the same
range, matched by subject and action. Event time decides everything, so the same range and policy
give the same result every time.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from producers.contract import EVENTS_TOPIC, Event, Revocation, encode
from producers.errors import SessionwatchError

log = logging.getLogger("sessionwatch.replay")

# (tenant, scope, subject, action): the subject is the session, user or source of the scope.
Key = tuple[str, str, str, str]
SHOWN_DIFFERENCES = 20


@dataclass(frozen=True)
class Decided:
    """Every revocation of one side with the same subject and action, merged."""

    tenant: str
    scope: str
    subject: str
    action: str
    detectors: tuple[str, ...]   # every detector that took part, sorted
    revocations: int
    first_ms: int                # event time of the first, epoch ms

    @property
    def key(self) -> Key:
        return (self.tenant, self.scope, self.subject, self.action)


@dataclass(frozen=True)
class BacktestResult:
    """The archive's decisions ("before") against the policy's ("new"), each list sorted by key."""

    policy: str
    events: int
    duplicates: int
    findings: int
    both: list[tuple[Decided, Decided]]       # (before, new)
    only_before: list[Decided]
    only_new: list[Decided]
    # detector -> revocations it took part in, on each side
    detectors_before: dict[str, int] = field(default_factory=dict)
    detectors_new: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "events": self.events, "duplicates": self.duplicates,
            "findings": self.findings,
            "both": [{"before": asdict(b), "new": asdict(n)} for b, n in self.both],
            "only_before": [asdict(d) for d in self.only_before],
            "only_new": [asdict(d) for d in self.only_new],
            "detectors": {d: {"before": self.detectors_before.get(d, 0),
                              "new": self.detectors_new.get(d, 0)}
                          for d in sorted({*self.detectors_before, *self.detectors_new})},
        }


def republish(events: Iterable[Event], bootstrap: str, topic: str = EVENTS_TOPIC,
              producer: Any = None, security: Any = None) -> int:
    """Produce each event (contract JSON, key = `event.key`) to `topic`, flush; returns the count.

    One request in flight at a time, so a retried batch cannot overtake the next: a session's
    events arrive in the order given. `security`: a KafkaSecurity (None: plaintext).
    """
    if topic == EVENTS_TOPIC:
        log.warning("replay: publishing to %s, the live events topic: a worker reading it will "
                    "decide these events again (same revocation ids, but its user and source "
                    "state sees them twice); use --topic for a fresh deployment's topic", topic)
    from kafka.errors import KafkaError  # type: ignore[import-untyped]

    from producers.client import kafka_python_producer

    failures: list[BaseException] = []
    count = 0
    try:
        if producer is None:
            producer = kafka_python_producer(
                bootstrap, security=security, client_id="sessionwatch-replay",
                max_in_flight_requests_per_connection=1, linger_ms=20, batch_size=262_144,
                max_block_ms=60_000)
        try:
            for event in events:
                future = producer.send(topic, key=event.key.encode(), value=encode(event))
                if hasattr(future, "add_errback"):
                    future.add_errback(failures.append)
                count += 1
            producer.flush(120)
        finally:
            producer.close(10)
    except KafkaError as exc:
        raise SessionwatchError(f"publish to {topic} at {bootstrap}: {exc!r} after {count} events; "
                                "check --bootstrap and that the topic can be written") from None
    if failures:
        raise SessionwatchError(f"publish to {topic} at {bootstrap}: {len(failures)} of {count} "
                                f"events were not written (first: {failures[0]!r})")
    return count


def backtest(events: Iterable[Event], policy: Any, archived: Iterable[Mapping[str, Any]],
             enricher: Any = None) -> BacktestResult:
    """Run `events` (in the order given) through `LocalRunner` under `policy` (None = built-in
    defaults) and compare its revocations with `archived` (`storage.replay.read_revocations`)."""
    from streams.enrich import Enricher
    from streams.local import LocalRunner
    from streams.policy import Policy
    from streams.policy_file import describe_policy

    archived = list(archived)
    described = describe_policy(policy) if policy is not None else "built-in defaults"
    runner = LocalRunner(policy=policy or Policy(), enricher=enricher or Enricher())
    new: list[Revocation] = []
    findings = 0
    for event in events:
        found, revocations = runner.process(event)
        findings += len(found)
        new.extend(revocations)
    found, revocations = runner.finish()  # decisions still held for the allowed lateness
    findings += len(found)
    new.extend(revocations)
    before = _merge(_archived_entry(row) for row in archived)
    after = _merge(_new_entry(r) for r in new)
    return BacktestResult(
        policy=described, events=runner.stats.events, duplicates=runner.stats.duplicates,
        findings=findings,
        both=[(before[k], after[k]) for k in sorted(before.keys() & after.keys())],
        only_before=[before[k] for k in sorted(before.keys() - after.keys())],
        only_new=[after[k] for k in sorted(after.keys() - before.keys())],
        detectors_before=_per_detector(row["detectors"] for row in archived),
        detectors_new=_per_detector([r.detector for r in rev.reasons] for rev in new))


def print_backtest(result: BacktestResult, console: Any = None) -> None:
    """The comparison as rich tables: totals, per detector, and the first differences."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]sessionwatch replay --backtest[/]: {result.events} events "
                  f"({result.duplicates} duplicates), {result.findings} findings; "
                  f"policy: {escape(result.policy)}")
    t = Table(title="decisions (subject and action)")
    for col in ("revoked by both", "only before (archive)", "only by the new policy"):
        t.add_column(col, justify="right")
    t.add_row(str(len(result.both)), f"[yellow]{len(result.only_before)}[/]",
              f"[yellow]{len(result.only_new)}[/]")
    console.print(t)
    t = Table(title="revocations per detector")
    for col in ("detector", "before", "new", "change"):
        t.add_column(col, justify="left" if col == "detector" else "right")
    for detector in sorted({*result.detectors_before, *result.detectors_new}):
        b, n = result.detectors_before.get(detector, 0), result.detectors_new.get(detector, 0)
        t.add_row(escape(detector), str(b), str(n), f"{n - b:+d}" if n != b else "")
    console.print(t)
    for title, items in (("only before (archive)", result.only_before),
                         ("only by the new policy", result.only_new)):
        if not items:
            continue
        t = Table(title=f"{title}: {len(items)}"
                  + (f", first {SHOWN_DIFFERENCES}" if len(items) > SHOWN_DIFFERENCES else ""))
        for col in ("tenant", "subject", "action", "detectors"):
            t.add_column(col)
        for d in items[:SHOWN_DIFFERENCES]:
            t.add_row(escape(d.tenant), escape(f"{d.scope} {_short(d.subject)}"), d.action,
                      escape(", ".join(d.detectors)))
        console.print(t)


def replay_command(args: Any, settings: Any) -> int:
    """`sessionwatch replay`: check the flags, read the range from the archive, publish or
    backtest."""
    since, until = parse_time(args.since, "--from"), parse_time(args.until, "--to")
    if until <= since:
        raise SessionwatchError(f"--to ({args.until}) must be after --from ({args.since})")
    if args.publish == args.backtest:
        raise SessionwatchError("give exactly one of --publish (re-send the events to a topic) "
                                "and --backtest (compare a policy with the archived decisions)")
    if args.publish and (args.json_path or args.policy):
        raise SessionwatchError("--policy and --json go with --backtest, not --publish")
    if args.backtest and args.topic:
        raise SessionwatchError("--topic goes with --publish, not --backtest")
    if settings.chdb_dir and not Path(settings.chdb_dir).is_dir():
        raise SessionwatchError(f"--chdb: no such directory {settings.chdb_dir!r}")
    policy = None
    if args.backtest and settings.policy:
        from streams.policy_file import load_policy

        policy = load_policy(settings.policy)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sessionwatch.archive import open_archive
    from storage.replay import read_events, read_revocations

    backend = open_archive(settings)
    try:
        _check_archive(backend)
        events = read_events(backend, since, until, args.tenant)
        if args.publish:
            topic = args.topic or EVENTS_TOPIC
            count = republish(events, settings.bootstrap, topic,
                              security=settings.kafka_security)
            print(f"sessionwatch replay: {count} events from {since.isoformat()} to "
                  f"{until.isoformat()} published to {topic} at {settings.bootstrap}",
                  file=sys.stderr)
            return 0
        from streams.enrich import Enricher

        archived = read_revocations(backend, since, until, args.tenant)
        result = backtest(events, policy, archived,
                          Enricher(settings.city_db or None, settings.asn_db or None))
    finally:
        backend.close()
    print_backtest(result)
    if args.json_path is not None:
        Path(args.json_path).write_text(json.dumps(result.to_dict(), indent=1))
    return 0


def parse_time(text: str, flag: str) -> datetime:
    """An RFC 3339 time with an offset (`Z` or `+01:00`); naive times are refused."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SessionwatchError(f"{flag}: {text!r} is not an RFC 3339 time; write e.g. "
                                "2026-03-02T09:00:00Z") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise SessionwatchError(f"{flag}: {text!r} has no UTC offset; write e.g. {text}Z or "
                                f"{text}+01:00")
    return when


def _check_archive(backend: Any) -> None:
    tables = backend.query("SELECT name FROM system.tables WHERE database = 'sessionwatch' "
                           "AND name IN ('events', 'revocations')")
    missing = {"events", "revocations"} - set(map(str, tables["name"] if not tables.empty else ()))
    if missing:
        raise SessionwatchError(f"{backend.name}: the archive has no sessionwatch."
                                f"{', sessionwatch.'.join(sorted(missing))}; is this the archive "
                                "`sessionwatch archive` writes to?")


def _archived_entry(row: Mapping[str, Any]) -> Decided:
    scope = str(row["scope"])
    return Decided(tenant=str(row["tenant"]), scope=scope, subject=str(row[scope] or ""),
                   action=str(row["action"]), detectors=tuple(sorted(row["detectors"])),
                   revocations=1, first_ms=int(row["time_ms"]))


def _new_entry(rev: Revocation) -> Decided:
    from storage.clickhouse.rows import epoch_ms

    subject = {"session": rev.session, "user": rev.user, "source": rev.source}[rev.scope.value]
    return Decided(tenant=rev.tenant, scope=rev.scope.value, subject=subject or "",
                   action=rev.action.value,
                   detectors=tuple(sorted({r.detector for r in rev.reasons})), revocations=1,
                   first_ms=epoch_ms(rev.event_time))


def _merge(entries: Iterable[Decided]) -> dict[Key, Decided]:
    merged: dict[Key, Decided] = {}
    for e in entries:
        seen = merged.get(e.key)
        merged[e.key] = e if seen is None else Decided(
            tenant=e.tenant, scope=e.scope, subject=e.subject, action=e.action,
            detectors=tuple(sorted({*seen.detectors, *e.detectors})),
            revocations=seen.revocations + e.revocations, first_ms=min(seen.first_ms, e.first_ms))
    return merged


def _per_detector(detector_lists: Iterable[Iterable[str]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for detectors in detector_lists:
        counts.update(set(detectors))
    return dict(sorted(counts.items()))


def _short(subject: str) -> str:
    """Session and user ids are keyed hashes, never tokens; cut to fit a terminal."""
    return subject if len(subject) <= 20 else subject[:16] + "…"
