"""Labels per session for training: simulator truth, or analysts' verdicts plus an audit sample.

A label frame has one row per session: `session`, `label` (1 attacked, 0 benign), `cls` (the
attack class or benign kind, for per-class figures) and `start` (event time, epoch seconds, from
which the session's rows count as attacked: a hijacked session's rows before its attack look
like the victim's and are left out, not called benign).
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ("session", "label", "cls", "start")


def simulation_labels(truth) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """From a simulation's `Truth` (sessionwatch/simulation/truth.py)."""
    rows: dict[str, tuple[str, int, str, float]] = {}
    for b in truth.benign:
        for h in b.hashes or [b.session]:
            rows[h] = (h, 0, b.kind, 0.0)
    for a in truth.attacks:
        for s in a.sessions:
            earlier = rows.get(s)
            if earlier is not None and earlier[1] == 1 and earlier[3] <= a.start:
                continue  # attacked twice: its rows count as attacked from the first attack
            rows[s] = (s, 1, a.cls, a.start)   # a victim's session is not benign
    return pd.DataFrame(list(rows.values()), columns=list(COLUMNS))


def archive_labels(verdicts: pd.DataFrame, audit: pd.DataFrame) -> pd.DataFrame:
    """From the archive: confirmed verdicts are attacks, dismissed ones and the audit sample of
    sessions nobody flagged are benign (the sample keeps the model from learning only what the
    rules already alerted on). `verdicts`: session, label ('confirmed'|'dismissed'); `audit`:
    session."""
    rows: dict[str, tuple[str, int, str, float]] = {}
    for s in audit["session"]:
        rows[str(s)] = (str(s), 0, "audit_sample", 0.0)
    for s, verdict in zip(verdicts["session"], verdicts["label"], strict=True):
        if not s:
            continue
        rows[str(s)] = (str(s), 1 if verdict == "confirmed" else 0,
                        "confirmed" if verdict == "confirmed" else "dismissed", 0.0)
    return pd.DataFrame(list(rows.values()), columns=list(COLUMNS))
