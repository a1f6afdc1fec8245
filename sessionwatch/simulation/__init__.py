"""A seeded, labelled traffic generator: a benign population and attack classes, with truth.

`simulate(users, seed)` returns contract events in event-time order and the truth they are scored
against (sessionwatch/evaluate.py). `plan_traffic` is the demo's smaller, SDK-driven planner.
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
from sessionwatch.simulation.truth import AttackTruth, BenignTruth, Truth
from sessionwatch.simulation.world import SIM_HASH_KEY, SIM_HASH_KEY_ID, START, World

__all__ = [
    "ATTACK_CLASSES", "ATTACK_KINDS", "DETECTABLE_ATTACKS", "SIM_HASH_KEY", "SIM_HASH_KEY_ID", "START",
    "AttackTruth", "BenignTruth", "Plan", "Planned", "SessionTruth", "Simulation", "Truth",
    "plan_traffic", "simulate",
]

ATTACK_CLASSES = tuple(ATTACKS)
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
) -> Simulation:
    """`users` benign users over `span_s` simulated seconds from START, plus attack instances.

    By default each attack class gets max(3, users // 40) instances (25 per class at 1000 users),
    spread over the span. Same arguments, same events: ids, tokens and hashes included.
    """
    unknown = sorted(set(classes) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attack classes {unknown}; known: {', '.join(ATTACKS)}")
    world = World(seed)
    pop = Population(world)
    for _ in range(users):
        pop.day(pop.user(), span_s)
    per_class = attacks_per_class if attacks_per_class is not None else max(3, users // 40)
    rng = world.rng
    for cls in classes:
        for i in range(per_class):
            ATTACKS[cls](pop, i, rng.uniform(span_s * 0.05, span_s * 0.85))
    world.truth.users = pop.users_made
    return Simulation(events=world.events(), truth=world.truth, malicious=dict(world.malicious))
