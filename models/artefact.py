"""The learned score's trained artefact: a directory of skops files and a `model.json`, written
atomically and verified before any byte of an estimator file reaches the deserialiser.

Format ``sessionwatch.model/1``, one directory:

- ``<name>.skops`` per estimator, written with ``skops.io``: ``supervised`` (HistGradientBoostingClassifier),
  ``baseline`` (Pipeline of StandardScaler + LogisticRegression) and ``isolation-<tenant>`` (IsolationForest,
  one per tenant, tenant ``[A-Za-z0-9._-]+``).
- ``model.json``: ``format``, ``version``, ``created_at`` (RFC 3339), ``feature_names`` and ``files``
  (``{name: {"file", "sha256", "type"}}``), plus whatever else the trainer recorded (training range and
  counts, thresholds, evaluation figures), stored unchanged. Written last, so a reloading worker never sees
  a model.json whose files are not all in place; every file goes to a temporary name first and is renamed
  into place with ``os.replace``.

Why this much care: pickle and joblib run arbitrary code while loading, so they are never used. skops
rebuilds only the types it is told to trust, but it has had holes of its own (CVE-2024-37065,
CVE-2025-54886; fixed by 0.13, the minimum we install), and the tree types it reads hold raw node indices
that scikit-learn follows without bounds checks, so a crafted file can crash a worker at its first
prediction. `load_artefact` therefore, in order:

1. reads model.json, checks its format and that its feature names are exactly the pipeline's (same names,
   same order: a model fed columns in another order scores garbage without any error);
2. reads each listed file (a plain file inside the directory, nothing like ``../x``) into memory and
   checks its SHA-256 against model.json before skops sees it; the audit and the load below work on those
   same bytes, so the file cannot be swapped between check and use;
3. refuses a file whose ``skops.io.get_untrusted_types`` lists anything outside the hard-coded
   `TRUSTED_TYPES`. Never ``trusted=get_untrusted_types(...)``: that trusts whatever the file asks for;
4. loads with ``trusted=TRUSTED_TYPES`` and checks the object is the class its name demands
   (`EXPECTED_TYPES`) and the class model.json records;
5. keeps the estimators model.json lists, and needs a ``supervised`` or an ``isolation-*`` one to score.

The hashes catch corruption, partial copies and hand edits, not a forger who can rewrite model.json too:
the artefact directory's write permission is the trust boundary. To replace a live model without a window
where model.json and the files disagree, save to a new directory and repoint (e.g. swap a symlink).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import skops.io as sio

from producers.errors import ConfigError

ARTEFACT_FORMAT = "sessionwatch.model/1"
META_FILE = "model.json"
SUFFIX = ".skops"

RETRAIN = "retrain with `sessionwatch train ... --out DIR`"
RESTORE = "restore the artefact from where it was built"
NO_HAND_EDITS = "do not edit model files by hand"

# The types skops does not trust by default but our three estimator kinds need. Obtained by training tiny
# HistGradientBoostingClassifier (early stopping on and off), IsolationForest and
# Pipeline(StandardScaler, LogisticRegression) on random data, dumping each with skops.io.dump and calling
# skops.io.get_untrusted_types(file=...), with scikit-learn 1.5.2 and 1.9.1 x skops 0.13.0 and 0.16.0.
# The sklearn module paths are the same in 1.5.2 and 1.9.1; which of them skops trusts by default is what
# moved: 0.13 trusts Tree but not the loss, link and _BinMapper types, 0.16 trusts those but neither Tree
# nor TreePredictor (crafted node indices can crash predict). The union covers the supported range.
# Pipelines of StandardScaler + LogisticRegression need nothing beyond skops's defaults.
# Not here on purpose: HistGradientBoostingClassifier(categorical_features=...) also needs functools.partial
# and sklearn.utils.validation.check_array (and, on sklearn 1.5, _RemainderColsList); review those before
# adding them. A contract test re-derives this list with the installed versions.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)

# Estimator name (a prefix when it ends in "-") -> the class it must be, as type(obj) reports it.
EXPECTED_TYPES: dict[str, str] = {
    "supervised": "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "baseline": "sklearn.pipeline.Pipeline",
    "isolation-": "sklearn.ensemble._iforest.IsolationForest",
}

_TENANT = re.compile(r"[A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_WRITTEN_BY_SAVE = ("format", "files")


class ModelError(ConfigError):
    """The model artefact cannot be saved or loaded. The message names the file and says what to do."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified artefact. `digest` is the SHA-256 of model.json's bytes: a new artefact, a new digest."""

    directory: Path
    meta: dict[str, Any]
    estimators: dict[str, Any]
    digest: str


def expected_type(name: str) -> str | None:
    """The class an estimator called `name` must be, or None when the format has no such name."""
    for key, type_name in EXPECTED_TYPES.items():
        if key.endswith("-"):
            if name.startswith(key) and _TENANT.fullmatch(name[len(key):]):
                return type_name
        elif name == key:
            return type_name
    return None


def qualified_type(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_artefact(out_dir: Path, estimators: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write `estimators` and `meta` as an artefact in `out_dir` (created if needed); returns its model.json.

    `meta` must hold ``feature_names``; ``version`` defaults to a digest of the estimator files and
    ``created_at`` to now. Everything is checked and serialised in memory before the first file is written.
    """
    out_dir = Path(out_dir).absolute()
    meta_path = out_dir / META_FILE
    for key in _WRITTEN_BY_SAVE:
        if key in meta:
            raise ModelError(f"{meta_path}: meta must not carry {key!r}; save_artefact writes it")
    feature_names = _feature_names(meta.get("feature_names"), meta_path)
    _check_names(estimators, meta_path, action="pass estimators named so")

    payloads: dict[str, bytes] = {}
    files: dict[str, dict[str, str]] = {}
    for name, estimator in sorted(estimators.items()):
        path = out_dir / f"{name}{SUFFIX}"
        actual, expected = qualified_type(estimator), expected_type(name)
        if actual != expected:
            raise ModelError(f"{path}: estimator {name!r} is a {actual}, the format needs a {expected}")
        _check_width(estimator, feature_names, path, action="fit it on exactly meta['feature_names']")
        try:
            payloads[name] = sio.dumps(estimator)
        except Exception as e:  # TypeError .. RecursionError (a scorer's cycle)
            raise ModelError(f"{path}: skops cannot store {name!r} ({type(e).__name__}: {e}); keep "
                             "estimators plain (e.g. early stopping with scoring='loss', no custom scorers)"
                             ) from e
        files[name] = {"file": path.name, "sha256": _sha256(payloads[name]), "type": actual}

    document = dict(meta)
    document.update(format=ARTEFACT_FORMAT, files=files, feature_names=feature_names)
    if "version" not in document:
        document["version"] = _sha256("".join(files[n]["sha256"] for n in sorted(files)).encode())[:12]
    if "created_at" not in document:
        document["created_at"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    _check_stamps(document, meta_path, action="pass a str version and an RFC 3339 created_at with a zone")
    try:
        text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ModelError(f"{meta_path}: meta is not plain JSON ({e}); pass str/int/float/bool/None, lists "
                         "and dicts only (float() numpy numbers, None for NaN)") from e

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in payloads.items():
            _write_atomic(out_dir / files[name]["file"], data)
        _fsync_dir(out_dir)  # the renames above are durable before model.json points at them
        _write_atomic(meta_path, text.encode())
        _fsync_dir(out_dir)
    except OSError as e:
        raise ModelError(f"{meta_path}: cannot write the artefact ({e}); check the directory is writable "
                         "and has space, then save again") from e
    return meta_path


def load_artefact(directory: Path, expected_features: Sequence[str]) -> LoadedModel:
    """Verify and load the artefact in `directory` (the steps in the module docstring); ModelError if not."""
    directory = Path(directory).absolute()
    meta_path = directory / META_FILE
    raw = _read_meta(directory, meta_path)
    meta = _parse_meta(raw, meta_path)
    _match_features(_feature_names(meta.get("feature_names"), meta_path), expected_features, meta_path)
    _check_stamps(meta, meta_path, action=f"{RESTORE}; {NO_HAND_EDITS}")
    entries = _file_entries(meta, meta_path)

    payloads = {name: _read_verified(directory, meta_path, name, entry) for name, entry in entries.items()}

    for name, data in payloads.items():
        path = directory / entries[name]["file"]
        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as e:
            raise ModelError(f"{path}: not a readable skops file ({type(e).__name__}: {e}); {RESTORE}, "
                             f"or {RETRAIN}") from e
        unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if unexpected:
            raise ModelError(f"{path}: refused, not loaded: it contains types sessionwatch does not trust: "
                             f"{', '.join(unexpected)}. The trainer writes only scikit-learn estimators; "
                             f"{RETRAIN} (add a type to TRUSTED_TYPES only after reviewing it)")

    estimators: dict[str, Any] = {}
    for name, data in payloads.items():
        path = directory / entries[name]["file"]
        try:
            estimator = sio.loads(data, trusted=list(TRUSTED_TYPES))
        except Exception as e:
            raise ModelError(f"{path}: skops cannot load it ({type(e).__name__}: {e}); {RETRAIN} with the "
                             "installed scikit-learn and skops") from e
        actual, expected, recorded = qualified_type(estimator), expected_type(name), entries[name]["type"]
        if actual != expected:
            raise ModelError(f"{path}: holds a {actual}, but estimator {name!r} must be a {expected}; "
                             f"{RETRAIN}; {NO_HAND_EDITS}")
        if actual != recorded:
            raise ModelError(f"{path}: holds a {actual}, but {meta_path} records {recorded}; {RESTORE}; "
                             f"{NO_HAND_EDITS}")
        _check_width(estimator, expected_features, path, action=RETRAIN)
        estimators[name] = estimator

    if "supervised" not in estimators and not any(n.startswith("isolation-") for n in estimators):
        raise ModelError(f"{meta_path}: lists neither a 'supervised' nor an 'isolation-<tenant>' estimator, "
                         f"so there is nothing to score with; {RETRAIN}")
    return LoadedModel(directory=directory, meta=meta, estimators=estimators, digest=_sha256(raw))


def _read_meta(directory: Path, meta_path: Path) -> bytes:
    if not directory.is_dir():
        raise ModelError(f"{directory}: no model directory here; {RETRAIN}, or point at the directory "
                         f"that holds {META_FILE}")
    try:
        return meta_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: missing, so this is not a (complete) artefact; {RETRAIN}, or "
                         f"{RESTORE}") from None
    except OSError as e:
        raise ModelError(f"{meta_path}: cannot read it ({e}); check its permissions") from e


def _parse_meta(raw: bytes, meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ModelError(f"{meta_path}: not UTF-8 ({e}); {RESTORE}; {NO_HAND_EDITS}") from e
    except json.JSONDecodeError as e:
        raise ModelError(f"{meta_path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         f"{RESTORE}; {NO_HAND_EDITS}") from e
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: not a JSON object; {RESTORE}; {NO_HAND_EDITS}")
    if meta.get("format") != ARTEFACT_FORMAT:
        raise ModelError(f"{meta_path}: format is {meta.get('format')!r}, this version reads "
                         f"{ARTEFACT_FORMAT!r}; {RETRAIN} with this version of sessionwatch")
    return meta


def _feature_names(value: object, meta_path: Path) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ModelError(f"{meta_path}: feature_names must be a non-empty list of str, not {value!r}; "
                         f"{RETRAIN}")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise ModelError(f"{meta_path}: feature_names repeats {', '.join(repeated)}; {RETRAIN}")
    return list(value)


def _match_features(recorded: list[str], expected: Sequence[str], meta_path: Path) -> None:
    expected = list(expected)
    if recorded == expected:
        return
    at = next((i for i, (r, e) in enumerate(zip(recorded, expected, strict=False)) if r != e),
              min(len(recorded), len(expected)))
    model_side = repr(recorded[at]) if at < len(recorded) else "(nothing)"
    pipeline_side = repr(expected[at]) if at < len(expected) else "(nothing)"
    raise ModelError(f"{meta_path}: the model was trained on {len(recorded)} features, the pipeline computes "
                     f"{len(expected)}; first difference at position {at}: model {model_side}, pipeline "
                     f"{pipeline_side}. Features must match by name and order; {RETRAIN} against this "
                     "version's features, or run the version the model was trained with")


def _check_stamps(meta: Mapping[str, Any], meta_path: Path, action: str) -> None:
    if not isinstance(meta.get("version"), str):
        raise ModelError(f"{meta_path}: version must be a str, not {meta.get('version')!r}; {action}")
    created_at = meta.get("created_at")
    try:
        if not isinstance(created_at, str) or datetime.fromisoformat(created_at).tzinfo is None:
            raise ValueError
    except ValueError:
        raise ModelError(f"{meta_path}: created_at {created_at!r} is not an RFC 3339 time with a zone; "
                         f"{action}") from None


def _check_names(names: Iterable[str], meta_path: Path, action: str) -> None:
    names = list(names)
    unknown = sorted(repr(n) for n in names if not isinstance(n, str) or expected_type(n) is None)
    if unknown:
        raise ModelError(f"{meta_path}: unknown estimator name(s) {', '.join(unknown)}: the format has "
                         "'supervised', 'baseline' and 'isolation-<tenant>' (tenant [A-Za-z0-9._-]+); "
                         f"{action}")
    if "supervised" not in names and not any(n.startswith("isolation-") for n in names):
        raise ModelError(f"{meta_path}: needs a 'supervised' or an 'isolation-<tenant>' estimator to "
                         f"score with, got {sorted(names)}; {action}")


def _file_entries(meta: Mapping[str, Any], meta_path: Path) -> dict[str, dict[str, str]]:
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelError(f"{meta_path}: 'files' must be a non-empty object; {RESTORE}; {NO_HAND_EDITS}")
    unknown = sorted(repr(n) for n in files if expected_type(n) is None)
    if unknown:
        raise ModelError(f"{meta_path}: unknown estimator name(s) {', '.join(unknown)}: the format has "
                         "'supervised', 'baseline' and 'isolation-<tenant>'; "
                         f"{RETRAIN} with this version of sessionwatch")
    for name, entry in files.items():
        fields = ("file", "sha256", "type")
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in fields)
                and _SHA256.fullmatch(entry["sha256"])):
            raise ModelError(f"{meta_path}: files[{name!r}] must be {{'file', 'sha256' (64 lowercase hex), "
                             f"'type'}} strings, not {entry!r}; {RESTORE}; {NO_HAND_EDITS}")
        file = entry["file"]
        if os.path.isabs(file) or Path(file).name != file or file in ("", ".", ".."):
            raise ModelError(f"{meta_path}: files[{name!r}] names {file!r}, which is not a plain file name "
                             f"inside {meta_path.parent}; refused. {RESTORE}; {NO_HAND_EDITS}")
        if file != f"{name}{SUFFIX}":
            raise ModelError(f"{meta_path}: files[{name!r}] names {file!r}, the format names it "
                             f"'{name}{SUFFIX}'; {RESTORE}; {NO_HAND_EDITS}")
    return files


def _read_verified(directory: Path, meta_path: Path, name: str, entry: Mapping[str, str]) -> bytes:
    """The file's bytes, once they are known to be a plain file inside `directory` with the recorded hash."""
    path = directory / entry["file"]
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing ({meta_path} lists it for {name!r}); {RESTORE}, or "
                         f"{RETRAIN}") from None
    except OSError as e:  # O_NOFOLLOW on a symlink lands here (ELOOP)
        raise ModelError(f"{path}: cannot open it as a plain file ({e}); model files must be regular files, "
                         f"not links; {RESTORE}") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ModelError(f"{path}: not a regular file; {RESTORE}")
        data = f.read()
    actual = _sha256(data)
    if actual != entry["sha256"]:
        raise ModelError(f"{path}: SHA-256 is {actual}, {meta_path} records {entry['sha256']}: the file was "
                         f"changed, truncated or mixed with another artefact; refused before reading it. "
                         f"{RESTORE}; {NO_HAND_EDITS}")
    return data


def _check_width(estimator: Any, feature_names: Sequence[str], path: Path, action: str) -> None:
    width = getattr(estimator, "n_features_in_", None)
    if width is not None and width != len(feature_names):
        raise ModelError(f"{path}: the estimator takes {width} features, feature_names has "
                         f"{len(feature_names)}; {action}")
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and [str(n) for n in names] != list(feature_names):
        raise ModelError(f"{path}: the estimator was fitted on columns {list(names)}, feature_names is "
                         f"{list(feature_names)}; {action}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from a worker running as another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
