"""The model artefact: real skops files round-trip, and every kind of tampering is refused before loading."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models import artefact
from models.artefact import (
    ARTEFACT_FORMAT,
    EXPECTED_TYPES,
    META_FILE,
    TRUSTED_TYPES,
    LoadedModel,
    ModelError,
    load_artefact,
    qualified_type,
    save_artefact,
)

FEATURES = ["ip_changes_1h", "ua_changes_1h", "km_per_hour", "asn_is_hosting"]
META = {"feature_names": FEATURES, "version": "2026.03.02-1", "trained_from": "2026-02-01T00:00:00Z",
        "events": 240, "thresholds": {"alert": 0.8, "revoke": 0.95}, "evaluation": {"auc": 0.91}}


def _data(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(240, len(FEATURES)))
    return x, (x[:, 0] + 0.5 * rng.normal(size=len(x)) > 0).astype(int)


@pytest.fixture(scope="module")
def estimators() -> dict[str, Any]:
    x, y = _data()
    return {
        "supervised": HistGradientBoostingClassifier(max_iter=8, early_stopping=False, random_state=0)
        .fit(x, y),
        "baseline": Pipeline([("scale", StandardScaler()), ("logit", LogisticRegression())]).fit(x, y),
        "isolation-acme.eu_1": IsolationForest(n_estimators=8, random_state=0).fit(x),
    }


@pytest.fixture
def saved(tmp_path: Path, estimators: dict[str, Any]) -> Path:
    out = tmp_path / "model"
    save_artefact(out, estimators, META)
    return out


def _edit_meta(directory: Path, edit: Any) -> None:
    path = directory / META_FILE
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1, sort_keys=True))


def _plant(directory: Path, name: str, obj: object) -> Path:
    """Replace `name`'s file with `obj` and record its true hash (a forger who can edit model.json)."""
    path = directory / f"{name}.skops"
    sio.dump(obj, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_meta(directory, lambda m: m["files"][name].update(sha256=digest))
    return path


def _refused(directory: Path, *fragments: str, features: list[str] = FEATURES) -> str:
    with pytest.raises(ModelError) as caught:
        load_artefact(directory, features)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


class Tripwire:
    """A custom class: skops stores it, does not trust it, and would run __setstate__ on load."""

    constructed: list[object] = []

    def __init__(self, payload: str) -> None:
        self.payload = payload

    def __setstate__(self, state: dict[str, Any]) -> None:
        Tripwire.constructed.append(state)


# --- round trip ---------------------------------------------------------------------------------------


def test_round_trip_predicts_the_same(saved: Path, estimators: dict[str, Any]) -> None:
    model = load_artefact(saved, FEATURES)

    assert isinstance(model, LoadedModel)
    assert model.directory == saved and set(model.estimators) == set(estimators)
    x, _ = _data(seed=99)
    for name in ("supervised", "baseline"):
        np.testing.assert_array_equal(model.estimators[name].predict_proba(x),
                                      estimators[name].predict_proba(x))
    np.testing.assert_array_equal(model.estimators["isolation-acme.eu_1"].score_samples(x),
                                  estimators["isolation-acme.eu_1"].score_samples(x))
    assert model.digest == hashlib.sha256((saved / META_FILE).read_bytes()).hexdigest()


def test_model_json_layout(saved: Path, estimators: dict[str, Any]) -> None:
    text = (saved / META_FILE).read_text()
    meta = json.loads(text)

    assert text == json.dumps(meta, indent=1, sort_keys=True) + "\n"
    assert meta["format"] == ARTEFACT_FORMAT and meta["feature_names"] == FEATURES
    assert {k: meta[k] for k in META} == META  # the trainer's meta is stored unchanged
    assert meta["created_at"].endswith("Z")
    for name, entry in meta["files"].items():
        assert entry["file"] == f"{name}.skops"
        assert entry["sha256"] == hashlib.sha256((saved / entry["file"]).read_bytes()).hexdigest()
        assert entry["type"] == qualified_type(estimators[name])
    assert sorted(p.name for p in saved.iterdir()) == sorted([META_FILE, *(e["file"] for e in
                                                                           meta["files"].values())])


def test_model_json_is_written_last_through_temporary_names(
        tmp_path: Path, estimators: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(artefact.os, "replace", spy)
    save_artefact(tmp_path / "m", estimators, META)

    assert [dst for _, dst in replaced][-1] == META_FILE
    assert len(replaced) == len(estimators) + 1
    assert all(src != dst and src.startswith(f".{dst}.") for src, dst in replaced)


def test_a_new_artefact_has_a_new_digest(saved: Path, estimators: dict[str, Any]) -> None:
    before = load_artefact(saved, FEATURES).digest
    save_artefact(saved, estimators, {**META, "version": "2026.03.03-1"})
    assert load_artefact(saved, FEATURES).digest != before


def test_isolation_only_is_enough(tmp_path: Path, estimators: dict[str, Any]) -> None:
    save_artefact(tmp_path, {"isolation-acme.eu_1": estimators["isolation-acme.eu_1"]}, META)
    assert set(load_artefact(tmp_path, FEATURES).estimators) == {"isolation-acme.eu_1"}


def test_trusted_types_cover_what_the_trainer_writes(tmp_path: Path, estimators: dict[str, Any]) -> None:
    # Re-derives TRUSTED_TYPES with the installed sklearn/skops: an upgrade that needs a new type fails here.
    x, y = _data()
    kinds = {**estimators, "supervised-early-stopping": HistGradientBoostingClassifier(
        max_iter=20, early_stopping=True, n_iter_no_change=2, random_state=0).fit(x, y)}
    for name, estimator in kinds.items():
        path = tmp_path / f"{name}.skops"
        sio.dump(estimator, path)
        assert set(sio.get_untrusted_types(file=path)) <= set(TRUSTED_TYPES), name
    assert list(TRUSTED_TYPES) == sorted(TRUSTED_TYPES)
    for name, estimator in estimators.items():
        key = name if name in EXPECTED_TYPES else "isolation-"
        assert qualified_type(estimator) == EXPECTED_TYPES[key]


# --- refusals: model.json -----------------------------------------------------------------------------


def test_missing_directory_and_missing_model_json(tmp_path: Path, saved: Path) -> None:
    _refused(tmp_path / "nowhere", str(tmp_path / "nowhere"), "sessionwatch train")
    (saved / META_FILE).unlink()
    _refused(saved, str(saved / META_FILE), "missing", "sessionwatch train")


def test_malformed_json(saved: Path) -> None:
    (saved / META_FILE).write_text('{"format": "sessionwatch.model/1", ')
    _refused(saved, str(saved / META_FILE), "not valid JSON", "line 1", "by hand")


def test_wrong_format_string(saved: Path) -> None:
    _edit_meta(saved, lambda m: m.update(format="sessionwatch.model/0"))
    _refused(saved, str(saved / META_FILE), "'sessionwatch.model/0'", ARTEFACT_FORMAT, "retrain")


def test_feature_order_mismatch_names_the_first_difference(saved: Path) -> None:
    swapped = [FEATURES[0], FEATURES[2], FEATURES[1], FEATURES[3]]
    _refused(saved, str(saved / META_FILE), "position 1", repr(FEATURES[1]), repr(FEATURES[2]), "order",
             features=swapped)
    _refused(saved, "position 4", "(nothing)", "'extra'", features=[*FEATURES, "extra"])


# --- refusals: files ----------------------------------------------------------------------------------


def test_flipped_byte_is_refused_before_skops_reads_it(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved / "supervised.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("skops read an unverified file")

    monkeypatch.setattr(sio, "get_untrusted_types", never)
    monkeypatch.setattr(sio, "loads", never)
    monkeypatch.setattr(sio, "load", never)
    _refused(saved, str(path), "SHA-256", "restore the artefact")


def test_wrong_recorded_hash_is_refused(saved: Path) -> None:
    _edit_meta(saved, lambda m: m["files"]["baseline"].update(sha256="0" * 64))
    _refused(saved, str(saved / "baseline.skops"), "SHA-256", "0" * 64)


def test_missing_file(saved: Path) -> None:
    (saved / "isolation-acme.eu_1.skops").unlink()
    _refused(saved, str(saved / "isolation-acme.eu_1.skops"), "missing", "restore the artefact")


@pytest.mark.parametrize("name", ["../outside.skops", "/etc/passwd", "sub/supervised.skops", ".."])
def test_path_traversal_is_refused(saved: Path, name: str) -> None:
    # A real skops file with the right hash waits outside: the name alone must be enough to refuse.
    shutil.copy(saved / "supervised.skops", saved.parent / "outside.skops")
    _edit_meta(saved, lambda m: m["files"]["supervised"].update(file=name))
    _refused(saved, str(saved / META_FILE), repr(name), "not a plain file name")


def test_a_symlink_is_not_a_plain_file(saved: Path) -> None:
    path = saved / "supervised.skops"
    real = saved.parent / "elsewhere.skops"
    path.rename(real)
    path.symlink_to(real)
    _refused(saved, str(path), "plain file")


@pytest.mark.parametrize("edit_recorded_type", [False, True])
def test_another_estimator_under_a_name_is_refused(saved: Path, edit_recorded_type: bool) -> None:
    x, y = _data()
    forest = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0).fit(x, y)
    path = _plant(saved, "supervised", forest)
    if edit_recorded_type:
        _edit_meta(saved, lambda m: m["files"]["supervised"].update(type=qualified_type(forest)))
    _refused(saved, str(path), "RandomForestClassifier", "HistGradientBoostingClassifier")


def test_recorded_type_must_match_the_file(saved: Path) -> None:
    _edit_meta(saved, lambda m: m["files"]["baseline"].update(type="sklearn.pipeline.FeatureUnion"))
    _refused(saved, str(saved / "baseline.skops"), "sklearn.pipeline.FeatureUnion")


def test_untrusted_custom_class_is_refused_and_never_constructed(saved: Path) -> None:
    path = _plant(saved, "supervised", Tripwire("armed"))
    Tripwire.constructed.clear()

    _refused(saved, str(path), f"{Tripwire.__module__}.Tripwire", "not loaded")
    assert Tripwire.constructed == []
    # The tripwire works: trusting the type by hand does construct it.
    sio.load(path, trusted=[f"{Tripwire.__module__}.Tripwire"])
    assert Tripwire.constructed == [{"payload": "armed"}]


def test_untrusted_function_is_refused(saved: Path) -> None:
    path = _plant(saved, "baseline", {"run": os.system})
    _refused(saved, str(path), f"{os.system.__module__}.system", "sessionwatch train")


def test_unknown_estimator_name_and_nothing_to_score_with(saved: Path) -> None:
    _edit_meta(saved, lambda m: m["files"].update(extra=m["files"]["baseline"]))
    _refused(saved, "'extra'", "isolation-<tenant>")
    _edit_meta(saved, lambda m: m["files"].pop("extra"))
    for name in ("supervised", "isolation-acme.eu_1"):
        _edit_meta(saved, lambda m, n=name: m["files"].pop(n))
    _refused(saved, str(saved / META_FILE), "nothing to score with")


# --- save-side checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["isolation-", "isolation-a/b", "isolation-../x", "isolation-é", "forest"])
def test_save_refuses_bad_names(tmp_path: Path, estimators: dict[str, Any], name: str) -> None:
    with pytest.raises(ModelError, match="unknown estimator name"):
        save_artefact(tmp_path, {**estimators, name: estimators["isolation-acme.eu_1"]}, META)
    assert not (tmp_path / META_FILE).exists()


def test_save_refuses_wrong_types_widths_and_meta(tmp_path: Path, estimators: dict[str, Any]) -> None:
    with pytest.raises(ModelError, match="needs a sklearn.pipeline.Pipeline"):
        save_artefact(tmp_path, {**estimators, "baseline": estimators["supervised"]}, META)
    with pytest.raises(ModelError, match="takes 4 features"):
        save_artefact(tmp_path, estimators, {**META, "feature_names": FEATURES[:3]})
    with pytest.raises(ModelError, match="nothing|score with"):
        save_artefact(tmp_path, {"baseline": estimators["baseline"]}, META)
    with pytest.raises(ModelError, match="must not carry 'files'"):
        save_artefact(tmp_path, estimators, {**META, "files": {}})
    with pytest.raises(ModelError, match="not plain JSON"):
        save_artefact(tmp_path, estimators, {**META, "evaluation": {"auc": float("nan")}})
    assert list(tmp_path.iterdir()) == []
