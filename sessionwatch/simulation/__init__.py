"""A seeded, labelled traffic generator: a benign population and attack classes, with truth.

`simulate(users, seed)` returns contract events in event-time order and the truth they are scored
against (sessionwatch/evaluate.py). `plan_traffic` is the demo's smaller, SDK-driven planner.
Benign look-alikes of the blended attacks, history days before START and edge fingerprints are
generated after the original population and attacks, which therefore stay the same for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import Event
from sessionwatch.simulation.attacks import ATTACKS
from sessionwatch.simulation.benign import Population
from sessionwatch.simulation.demo_plan import (
    ATTACK_KINDS,
    DETECTABLE_ATTACKS,
    Plan,
    Planned,
    SessionTruth,
    plan_traffic,
)
from sessionwatch.simulation.history import HISTORY_KIND, add_history
from sessionwatch.simulation.lookalikes import BENIGN_LOOKALIKES
from sessionwatch.simulation.paths import SENSITIVE_PATHS
from sessionwatch.simulation.truth import AttackTruth, BenignTruth, Truth
from sessionwatch.simulation.world import SIM_HASH_KEY, SIM_HASH_KEY_ID, START, World

__all__ = [
    "ATTACK_CLASSES", "ATTACK_KINDS", "BENIGN_LOOKALIKES", "DETECTABLE_ATTACKS", "HISTORY_KIND",
    "LOOKALIKE_KINDS", "ORIGINAL_ATTACK_CLASSES", "SENSITIVE_PATHS", "SIM_HASH_KEY", "SIM_HASH_KEY_ID",
    "START", "AttackTruth", "BenignTruth", "Plan", "Planned", "SessionTruth", "Simulation", "Truth",
    "plan_traffic", "simulate",
]

ATTACK_CLASSES = tuple(ATTACKS)
# The classes before the blended ones (their instances for a seed never change).
ORIGINAL_ATTACK_CLASSES = ATTACK_CLASSES[:ATTACK_CLASSES.index("replay_same_isp_interleaved")]
LOOKALIKE_KINDS = tuple(BENIGN_LOOKALIKES)
DEFAULT_SPAN_S = 6 * 3600.0


@dataclass
class Simulation:
    events: list[Event]
    truth: Truth
    # event id -> attack id, for every malicious event
    malicious: dict[str, str]


def simulate(
    users: int = 1000,
    seed: int = 7,
    attacks_per_class: int | None = None,
    classes: tuple[str, ...] = ATTACK_CLASSES,
    span_s: float = DEFAULT_SPAN_S,
    *,
    lookalikes: bool = True,
    history_days: int = 0,
    edge_fingerprints: float = 0.0,
) -> Simulation:
    """`users` benign users over `span_s` simulated seconds from START, plus attack instances.

    By default each attack class gets max(3, users // 40) instances (25 per class at 1000 users),
    spread over the span. Same arguments, same events: ids, tokens and hashes included.

    `lookalikes`: as many sessions of each BENIGN_LOOKALIKES kind as instances per class.
    `history_days`: every user (victims included) also gets that many earlier days of ordinary,
    benign visits before START. `edge_fingerprints`: the share of sessions whose requests carry
    attrs tcp_rtt_ms, tls_rtt_ms and ja4 (edge.py). Everything these add comes after the
    population and attacks, which are the same with or without them.
    """
    unknown = sorted(set(classes) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attack classes {unknown}; known: {', '.join(ATTACKS)}")
    if history_days < 0:
        raise ValueError(f"history_days must be 0 or more, not {history_days}")
    if not 0.0 <= edge_fingerprints <= 1.0:
        raise ValueError(f"edge_fingerprints is a share of sessions in [0, 1], not {edge_fingerprints}")
    world = World(seed, edge_fingerprints=edge_fingerprints)
    pop = Population(world)
    for _ in range(users):
        pop.day(pop.user(), span_s)
    per_class = attacks_per_class if attacks_per_class is not None else max(3, users // 40)
    rng = world.rng
    for cls in classes:
        for i in range(per_class):
            ATTACKS[cls](pop, i, rng.uniform(span_s * 0.05, span_s * 0.85))
    if lookalikes:
        for make in BENIGN_LOOKALIKES.values():
            for i in range(per_class):
                make(pop, i, rng.uniform(span_s * 0.05, span_s * 0.85))
    if history_days:
        add_history(pop, history_days, span_s)
    world.truth.users = pop.users_made
    return Simulation(events=world.events(), truth=world.truth, malicious=dict(world.malicious))
