"""session.anomaly - the learned score: behaviour the rules cannot see (models/).

A cookie replayed through a residential proxy on the victim's own ISP, in the victim's city, with
the victim's exact User-Agent, trips no rule: nothing about the address, network, place or client
is new enough. What gives it away is behaviour - two clients interleaving on one session,
requests from two networks closer together than the user ever browses, first requests after the
change going to exports and MFA settings - weighed against the user's own history (Freeman et al.,
NDSS 2016). The features are models/features.py; the model is a trained, verified artefact
(`sessionwatch train`, models/artefact.py) loaded with `sessionwatch worker --model DIR`.

Runs in the user stage, on arrival, because a user's history is only there (the user stage sees
all of a user's sessions); its subject is the event's session, hence the id. Only events that
changed something the model can see are scored (a login, a new address/client pair, a sensitive
first request after a change): the session stage marks them and sends its behaviour summary along.

Severity comes from the artefact's thresholds, chosen on validation data at fixed false-positive
rates (`model.json` "thresholds"). Policy default: `step_up` when high; medium is published as a
finding (an alert) and corroborates; a tenant may make it `revoke`. Without a model the detector
is off (the worker says so once in its log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from models.features import FEATURE_NAMES, N_FEATURES, Population
from models.scoring import AnomalyModel, LinearScorer
from producers.contract import Severity
from streams.detectors.base import ALERT, REVOKE, STEP_UP, Example, Signal, Step, UserContext, UserDetector

_HOME = "203.0.113.10"         # the victim's home address
_PROXY = "203.0.113.77"        # a residential proxy on the same line pool
_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
       "Chrome/124.0.0.0 Safari/537.36")


def example_model() -> AnomalyModel:
    """A hand-set linear model for the detector's own examples (the trained one is tested in
    tests/models/): interleaving clients and sensitive first requests push the score up."""
    weights = [0.0] * N_FEATURES
    weights[FEATURE_NAMES.index("alternations")] = 3.0
    weights[FEATURE_NAMES.index("sensitive_after_change")] = 2.0
    return AnomalyModel(
        scorer=LinearScorer(weights, intercept=-3.0, mean=[0.0] * N_FEATURES,
                            scale=[1.0] * N_FEATURES, fill=[0.0] * N_FEATURES),
        thresholds={"medium": 0.5, "high": 0.9}, population=Population(), version="example")


@dataclass(frozen=True)
class Params:
    # Which model scores: "artefact" (the one the worker was started with) or "example" (the
    # hand-set model above, for the examples and tests).
    model: str = "artefact"
    # Contributing features named in the evidence.
    explain: int = 3


class Anomaly(UserDetector):
    id = "session.anomaly"
    subject: ClassVar[str] = "session"   # runs in the user stage, acts on a session
    title = "Session behaviour unlike this user's (learned score)"
    default_severity = Severity.MEDIUM
    reference = ("Freeman et al., NDSS 2016 (per-user likelihood ratios); Wiefling et al., "
                 "ACM TOPS 2022; the artefact's thresholds at fixed false-positive rates")
    Params = Params
    on_arrival = True
    actions = (STEP_UP, REVOKE, ALERT)
    default_action = STEP_UP

    def __init__(self, model: AnomalyModel | None = None) -> None:
        self.model = model

    def model_for(self, params: Params) -> AnomalyModel | None:
        return example_model() if params.model == "example" else self.model

    def evaluate(self, ctx: UserContext, params: Any) -> Signal | None:
        model = self.model_for(params)
        if model is None or ctx.features is None:
            return None
        x = ctx.features
        score = model.scorer.score(x)
        severity = model.severity(score)
        if severity is None:
            return None
        because = model.explain(x, params.explain)
        return Signal(
            severity=Severity(severity),
            summary=f"session behaves unlike this user's ({', '.join(because) or 'learned score'})",
            evidence={"score": round(score, 4), "threshold": round(model.thresholds[severity], 4),
                      "model": model.version, "because": because},
        )

    examples = (
        Example(
            "same_isp_proxy_interleaving_with_the_victim",
            steps=(
                Step(0, _HOME, _UA, "session.authenticated"),
                Step(20, _HOME, _UA, attrs={"path": "/inbox"}),
                Step(40, _PROXY, _UA, attrs={"path": "/account/export"}),
                Step(60, _HOME, _UA, attrs={"path": "/inbox"}),
                Step(70, _PROXY, _UA, attrs={"path": "/settings/mfa"}),
            ),
            fires=True, severity=Severity.HIGH, params={"model": "example"},
        ),
        Example(
            "dhcp_renewal_once_then_steady",
            steps=(
                Step(0, _HOME, _UA, "session.authenticated"),
                Step(20, _HOME, _UA, attrs={"path": "/inbox"}),
                Step(40, _PROXY, _UA, attrs={"path": "/inbox"}),
                Step(60, _PROXY, _UA, attrs={"path": "/orders"}),
                Step(90, _PROXY, _UA, attrs={"path": "/search"}),
            ),
            fires=False, params={"model": "example"},
        ),
        Example(
            "no_model_no_score",
            steps=(
                Step(0, _HOME, _UA, "session.authenticated"),
                Step(20, _PROXY, _UA, attrs={"path": "/account/export"}),
                Step(40, _HOME, _UA, attrs={"path": "/inbox"}),
                Step(50, _PROXY, _UA, attrs={"path": "/settings/mfa"}),
            ),
            fires=False,
        ),
    )
