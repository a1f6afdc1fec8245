"""The trained artefact as the stream uses it: verified (models/artefact.py), then exported.

`load_model(DIR)` verifies the directory, exports the supervised model's trees to plain Python
(models/scoring.py) and takes its thresholds and population from `model.json`. Anything wrong
raises `ModelError` naming the file and what to do; the worker refuses to start on it, and a
reload keeps the model it had.
"""

from __future__ import annotations

from pathlib import Path

from models.artefact import META_FILE, ModelError, load_artefact
from models.features import FEATURE_NAMES, Population
from models.scoring import AnomalyModel, TreeScorer


def load_model(directory: Path | str) -> AnomalyModel:
    directory = Path(directory)
    loaded = load_artefact(directory, FEATURE_NAMES)
    meta_path = directory / META_FILE
    supervised = loaded.estimators.get("supervised")
    if supervised is None:
        raise ModelError(f"{meta_path}: no supervised model in this artefact; the stream scores "
                         "with one - retrain with `sessionwatch train ... --out DIR`")
    try:
        scorer = TreeScorer.from_sklearn(supervised)
        thresholds = {k: float(v) for k, v in loaded.meta["thresholds"]["supervised"].items()}
        population = Population.from_json(loaded.meta["population"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{meta_path}: {exc!r} - the thresholds or population are missing or "
                         "malformed; retrain with `sessionwatch train ... --out DIR` "
                         "(do not edit model files by hand)") from exc
    if not {"medium", "high"} <= thresholds.keys():
        raise ModelError(f"{meta_path}: thresholds.supervised needs 'medium' and 'high'; retrain "
                         "with `sessionwatch train ... --out DIR`")
    return AnomalyModel(scorer=scorer, thresholds=thresholds, population=population,
                        version=str(loaded.meta.get("version", "")), digest=loaded.digest)
