"""The training set: every scored event's feature vector, computed by the worker's own pipelines.

Events go through streams/local.py (the session, user and source stages the worker runs, with
the rules on) with a recorder in place of a model, so the trainer gets exactly the vectors the
worker would score - same routing, same state, same history - and, on the way, what the rules
alone decided about each session (the baseline the model is reported beside).

Two passes: the first counts the population (Freeman's p(value): how common each address,
network, place and client is across all users, and the global path bigrams); the second records
vectors against it. The population is shipped in the artefact, so the stream uses the training
data's frequencies, never its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from models.features import (
    FEATURE_NAMES,
    Population,
    PopulationCounter,
    SessionBehaviour,
    observation,
    observe,
)
from producers.contract import Action, Event
from streams.enrich import Enricher, network_prefix
from streams.local import LocalRunner
from streams.policy import Policy

REQUESTED_BY_USER = frozenset({"user.credential_change"})
META_COLUMNS = ("event_id", "tenant", "session", "user", "at", "event_type")


@dataclass
class Recorder:
    """The `FeatureRecorder` the trainer hands the user pipeline."""

    population: Population
    rows: list[tuple[str, str, str, str, float, str, list[float]]] = field(default_factory=list)

    def __call__(self, event: Event, features: list[float]) -> None:
        self.rows.append((event.id, event.tenant, event.session or "", event.user or "",
                          event.time.timestamp(), event.type.value, features))


@dataclass
class Recorded:
    frame: pd.DataFrame               # META_COLUMNS + FEATURE_NAMES, one row per scored event
    population: Population
    # session -> strongest action the rules took: "revoke", "step_up", or "requested" (ended
    # only because its user changed a password)
    rule_actions: dict[str, str]
    events: int


def count_population(events: Iterable[Event], enricher: Enricher,
                     users: Callable[[str], bool] | None = None) -> Population:
    """Pass one: how common each value is across the users' session events (`users` picks
    whose: the trainer counts the training users only, so nothing about held-out users
    reaches the features the figures are measured with)."""
    counter = PopulationCounter()
    sessions: dict[str, SessionBehaviour] = {}
    for event in events:
        if event.session is None or event.user is None:
            continue
        if users is not None and not users(event.user):
            continue
        network = enricher.network(event.ip)
        client = enricher.client(event.user_agent)
        path = event.attrs.get("path") if event.attrs else None
        now = event.time.timestamp()
        behaviour = observe(sessions.get(event.session), now=now, ip=event.ip,
                            user_agent=event.user_agent, event_type=event.type.value,
                            attrs=event.attrs, prefix=network_prefix(event.ip))
        sessions[event.session] = behaviour
        counter.add(observation(ip=event.ip, now=now, asn=network.asn, country=network.country,
                                city=network.city, user_agent=event.user_agent,
                                ua_family=client.family, os=client.os,
                                path=path if isinstance(path, str) else None), behaviour)
    return counter.build()


def record(events: Sequence[Event], *, enricher: Enricher | None = None,
           policy: Policy | None = None, population: Population | None = None) -> Recorded:
    """Pass two (and one, unless a population is given): the scored events' vectors."""
    enricher = enricher or Enricher()
    population = population if population is not None else count_population(
        events, enricher, training_user)
    recorder = Recorder(population)
    runner = LocalRunner(policy=policy or Policy(), enricher=enricher, recorder=recorder)
    strongest: dict[str, str] = {}
    for event in [*events, None]:
        _, revocations = runner.process(event) if event is not None else runner.finish()
        for r in revocations:
            # Sessions ended because their user changed a password are what the user asked for
            # (ASVS 7.4.3), not the rules acting on evidence: evaluate counts them apart too.
            if r.session is None:
                continue
            action = "revoke" if r.action is Action.REVOKE else r.action.value
            if {x.detector for x in r.reasons} <= REQUESTED_BY_USER:
                strongest.setdefault(r.session, "requested")
                continue
            if strongest.get(r.session) in (None, "requested", "step_up"):
                strongest[r.session] = action
    columns = [*META_COLUMNS, *FEATURE_NAMES]
    frame = pd.DataFrame([(*meta, *x) for *meta, x in recorder.rows], columns=columns) \
        if recorder.rows else pd.DataFrame(columns=columns)
    return Recorded(frame=frame, population=population, rule_actions=strongest,
                    events=len(events))


def user_group(user: str, salt: str = "sessionwatch") -> int:
    """A stable 0..9 bucket per user: whole users are held out, never split across sets."""
    return hashlib.sha256(f"{salt}|{user}".encode()).digest()[0] % 10


TRAIN_GROUPS = frozenset(range(6))      # user buckets (of 10) that train,
VALIDATION_GROUPS = frozenset((6, 7))   # that choose thresholds,
HOLDOUT_GROUPS = frozenset((8, 9))      # and that report figures


def training_user(user: str) -> bool:
    return user_group(user) in TRAIN_GROUPS
