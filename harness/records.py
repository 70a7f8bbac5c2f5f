"""Result records: one JSON file per submission of a cell, with per-sample predictions beside it.

Layout: ``results/<backbone>/<dataset>/<protocol>/<submitter>.seed<seed>.json`` and
``<submitter>.seed<seed>.predictions.npz`` (names made file-system safe by ``safe_name``). A
cell is identified by its path *and* its content: the verifier checks that a record lives
where its names say. Records are validated against ``record_schema.json`` (unknown fields
refused) and ``medfm.safe_values`` (printable text, finite numbers) when written and read;
``medfm.verification`` recomputes everything else from the predictions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import fastjsonschema
import numpy as np

from .errors import UserError
from .io import atomic_path, sha256_bytes, write_json
from .predictions import Predictions
from .safe_files import PREDICTIONS_MAX_BYTES, RECORD_MAX_BYTES, read_capped
from .safe_values import check_values, strict_json

SCHEMA_VERSION = 2
_UNSAFE = re.compile(r"[^A-Za-z0-9._@=+-]+")
RECORD_SUFFIX = ".json"
PREDICTIONS_SUFFIX = ".predictions.npz"
FAILED_SUFFIX = ".failed.json"
WORK_SUFFIX = ".work"
LOCK_SUFFIX = ".lock"
_STEM = re.compile(r"^(?P<submitter>[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?)\.seed(?P<seed>[0-9]{1,18})$")
MULTILINE_FIELDS = frozenset({"message", "traceback"})
PREDICTION_ARRAYS = ("ids", "labels", "scores", "groups")
MAX_UNCOMPRESSED_PREDICTIONS = 1 << 30
DISTANCE_METRIC_PREFIX = "hd95"  # segmentation's Hausdorff distances, the only metrics beyond [-1, 1]


def safe_name(name: str) -> str:
    """A file-system-safe version of a spec name (``timm/vit_b@448`` -> ``timm--vit_b@448``)."""
    cleaned = _UNSAFE.sub("_", name.replace("/", "--")).strip("._") or "_"
    if cleaned != name.replace("/", "--") or "--" in name:
        # the mapping was lossy: a short hash of the real name keeps distinct names distinct
        cleaned = f"{cleaned[:140]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return cleaned[:150]


@lru_cache(maxsize=1)
def record_schema() -> dict[str, Any]:
    """The JSON Schema of a result record."""
    return json.loads(resources.files("medfm").joinpath("record_schema.json").read_text())


@lru_cache(maxsize=1)
def _validator():
    # compiled to Python once per process: about ten times faster than interpreting the schema,
    # which matters when a leaderboard verifies thousands of records
    return fastjsonschema.compile(record_schema())


class RecordError(UserError):
    """A record or its predictions failed validation."""


def validate_record(record: Any, where: str = "record") -> None:
    """Raise ``RecordError`` naming the first problem: schema, then text and number rules."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a record must be a JSON object, not {type(record).__name__}")
    if record.get("schema_version") != SCHEMA_VERSION and isinstance(record.get("schema_version"), int):
        raise RecordError(
            f"{where}: schema version {record['schema_version']} is not the current "
            f"{SCHEMA_VERSION}; rerun the cell with this medfm to write a current record"
        )
    try:
        _validator()(record)
    except fastjsonschema.JsonSchemaException as exc:
        # a fast-fail validator raises JsonSchemaValueException, the subclass that carries .message
        assert isinstance(exc, fastjsonschema.JsonSchemaValueException)
        path = "/".join(str(p) for p in (getattr(exc, "path", None) or [])[1:]) or "(top level)"
        message = str(exc.message).replace("data.", "", 1) if str(exc.message).startswith("data.") else str(exc.message)
        raise RecordError(f"{where}: invalid at {path}: {_short(message)}") from None
    try:
        check_values(record, multiline_keys=MULTILINE_FIELDS)
    except ValueError as exc:
        raise RecordError(f"{where}: invalid at {exc}") from None
    for name, value in (record.get("metrics") or {}).items():
        if name.startswith(DISTANCE_METRIC_PREFIX):
            continue  # distances in mm; every other metric is a score within [-1, 1]
        for part in ("value", "ci_low", "ci_high"):
            v = value.get(part)
            if v is not None and not -1 <= v <= 1:
                raise RecordError(f"{where}: invalid at metrics/{name}/{part}: {v} is not within [-1, 1]")


def _short(message: str, limit: int = 200) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


# ------------------------------------------------------------------ layout
@dataclass(frozen=True)
class CellPaths:
    """Where one submission of one cell lives: record, predictions, failed-attempt note,
    scratch folder (training checkpoints) and the writers' lock."""

    record: Path
    predictions: Path
    failed: Path
    work: Path
    lock: Path


def submission_stem(submitter: str, seed: int) -> str:
    """``<submitter>.seed<seed>``: the file stem of one submission."""
    return f"{submitter}.seed{int(seed)}"


def parse_stem(stem: str) -> tuple[str, int] | None:
    """(submitter, seed) from a submission stem, or ``None`` if it is not one."""
    m = _STEM.match(stem)
    return (m["submitter"], int(m["seed"])) if m else None


def cell_folder(results_dir: str | Path, backbone: str, dataset: str, protocol: str) -> Path:
    """``results/<backbone>/<dataset>/<protocol>/``: the folder of every submission of a cell."""
    return Path(results_dir) / safe_name(backbone) / safe_name(dataset) / safe_name(protocol)


def cell_paths(
    results_dir: str | Path, backbone: str, dataset: str, protocol: str, submitter: str, seed: int
) -> CellPaths:
    """The files of one submission (see the module docstring for the layout)."""
    folder = cell_folder(results_dir, backbone, dataset, protocol)
    stem = submission_stem(submitter, seed)
    return CellPaths(
        folder / f"{stem}{RECORD_SUFFIX}",
        folder / f"{stem}{PREDICTIONS_SUFFIX}",
        folder / f"{stem}{FAILED_SUFFIX}",
        folder / f"{stem}{WORK_SUFFIX}",
        folder / f".{stem}{LOCK_SUFFIX}",
    )


def canonical_relpath(record: dict[str, Any]) -> str:
    """Where a record with this content must live, relative to the results folder (POSIX)."""
    sub = record["submission"]
    folder = cell_folder("", record["backbone"]["name"], record["dataset"]["name"], record["protocol"]["name"])
    return (folder / f"{submission_stem(sub['submitter'], sub['seed'])}{RECORD_SUFFIX}").as_posix()


def is_record_name(name: str) -> bool:
    """Whether a file name is a record's (not hidden, not a failed-attempt note)."""
    return name.endswith(RECORD_SUFFIX) and not name.startswith(".") and not name.endswith(FAILED_SUFFIX)


def is_record_file(path: Path) -> bool:
    """Whether a path names a record file (by name; the file itself is checked when read)."""
    return is_record_name(path.name)


# ------------------------------------------------------------------ predictions
def write_predictions(path: Path, predictions: Predictions) -> dict[str, Any]:
    """Store predictions compactly (compressed npz, float32 scores); return the record's pointer."""
    labels = np.asarray(predictions.labels)
    # Any, not ndarray: savez_compressed's **kwds would otherwise be checked against its allow_pickle: bool
    arrays: dict[str, Any] = {
        "ids": np.asarray([str(i) for i in predictions.ids], dtype=str),
        "labels": labels.astype(
            np.int16 if labels.size == 0 or (labels.max() < 32000 and labels.min() > -32000) else np.int64
        ),
        "scores": np.asarray(predictions.scores, dtype=np.float32),
    }
    if predictions.groups is not None:
        arrays["groups"] = np.asarray([str(g) for g in predictions.groups], dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"file": path.name, "sha256": sha256_bytes(data), "n": int(len(arrays["ids"]))}


def parse_predictions(data: bytes) -> Predictions:
    """Predictions from npz bytes, checked: known arrays only, no pickles, sane dtypes and shapes.

    Raises ``ValueError`` with a one-line reason (a zip bomb, an object array or a missing
    array never gets further than the checks).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"not an npz archive ({_short(str(exc), 80)})") from None
    names = [i.filename for i in infos]
    allowed = {f"{a}.npy" for a in PREDICTION_ARRAYS}
    unknown = sorted(set(names) - allowed)
    if unknown or len(names) != len(set(names)):
        raise ValueError(f"holds unexpected members {unknown or names}; expected {sorted(allowed)}")
    for required in ("ids", "labels", "scores"):
        if f"{required}.npy" not in names:
            raise ValueError(f"has no {required!r} array")
    if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED_PREDICTIONS:
        raise ValueError(f"would expand to more than {MAX_UNCOMPRESSED_PREDICTIONS} bytes")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for name in PREDICTION_ARRAYS:
                if f"{name}.npy" in names:
                    arrays[name] = np.asarray(npz[name])
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise ValueError("holds an object array; pickled data is refused") from None
        raise ValueError(f"an array cannot be read ({_short(str(exc), 80)})") from None
    except Exception as exc:  # corrupt member data: zlib, CRC, truncated headers
        raise ValueError(f"an array cannot be read ({type(exc).__name__}: {_short(str(exc), 80)})") from None
    ids, labels, scores = arrays["ids"], arrays["labels"], arrays["scores"]
    groups = arrays.get("groups")
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise ValueError(f"'ids' must be a 1-D text array, not {ids.dtype} of shape {ids.shape}")
    n = len(ids)
    if n == 0:
        raise ValueError("holds no predictions")
    if labels.dtype.kind not in "iub" or labels.ndim not in (1, 2) or len(labels) != n:
        raise ValueError(f"'labels' must be integers of shape ({n},) or ({n}, C), not {labels.dtype} {labels.shape}")
    if scores.dtype.kind != "f" or scores.ndim != 2 or len(scores) != n or scores.shape[1] < 1:
        raise ValueError(f"'scores' must be floats of shape ({n}, C), not {scores.dtype} {scores.shape}")
    if groups is not None and (groups.ndim != 1 or groups.dtype.kind != "U" or len(groups) != n):
        raise ValueError(f"'groups' must be a 1-D text array of {n} entries, not {groups.dtype} {groups.shape}")
    return Predictions(
        ids=[str(i) for i in ids.tolist()],
        labels=labels.astype(np.int64),
        scores=scores.astype(np.float64),
        groups=groups,
    )


def read_predictions(path: Path) -> Predictions:
    """Load predictions written by ``write_predictions`` (no pickle, capped size, no symlinks)."""
    try:
        return parse_predictions(read_capped(Path(path), PREDICTIONS_MAX_BYTES))
    except ValueError as exc:
        raise RecordError(f"{path}: {exc}") from None


# ------------------------------------------------------------------ records
def write_record(path: Path, record: dict[str, Any]) -> None:
    """Validate, then write atomically."""
    validate_record(record, str(path))
    write_json(path, record)


def parse_record(data: bytes, where: str) -> dict[str, Any]:
    """A schema-valid record from JSON bytes; ``RecordError`` naming ``where`` otherwise."""
    try:
        record = strict_json(data)
    except ValueError as exc:
        raise RecordError(f"{where}: {exc}") from None
    validate_record(record, where)
    return record


def read_record_bytes(path: Path) -> bytes:
    """A record file's bytes (capped, no symlinks); ``RecordError`` naming the file otherwise."""
    try:
        return read_capped(Path(path), RECORD_MAX_BYTES)
    except ValueError as exc:
        raise RecordError(f"{path}: {exc}") from None


def load_record(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """Read and validate a record; with ``verify``, everything ``medfm validate`` checks as well."""
    path = Path(path)
    if verify:
        from .verification import verify_file

        checked = verify_file(path)
        if checked.problem is not None:
            raise RecordError(checked.problem)
        return checked.verified_record
    return parse_record(read_record_bytes(path), str(path))


def iter_records(
    results_dir: str | Path, verify: bool = False
) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every record under ``results_dir`` as (path, record or None, error or None), sorted.

    Symlinks, folders named like records and unreadable files come back as errors, never
    as exceptions.
    """
    from .safe_files import walk_records

    root = Path(results_dir)
    if not root.is_dir():
        return
    if verify:
        from .verification import scan_results

        for checked in scan_results(root).entries:
            yield checked.path, (checked.record if checked.problem is None else None), checked.problem
        return
    for found in walk_records(root, is_record_name):
        if found.problem is not None:
            yield found.path, None, f"{found.path}: {found.problem}"
            continue
        try:
            yield found.path, load_record(found.path), None
        except RecordError as exc:
            yield found.path, None, str(exc)


def write_result(paths: CellPaths, record: dict[str, Any], predictions: Any) -> dict[str, Any]:
    """Write a submission's predictions (``Predictions``, or ``SegmentationPredictions``) and record
    together under its writer lock (completing ``record["predictions"]``), so a concurrent writer
    never leaves a record that does not match the predictions beside it."""
    from .seg_predictions import SegmentationPredictions, write_segmentation_predictions

    with cell_lock(paths):
        if isinstance(predictions, SegmentationPredictions):
            record["predictions"] = write_segmentation_predictions(paths.predictions, predictions)
        else:
            record["predictions"] = write_predictions(paths.predictions, predictions)
        write_record(paths.record, record)
    return record


@contextlib.contextmanager
def cell_lock(paths: CellPaths) -> Iterator[None]:
    """Hold the submission's writer lock: record and predictions are replaced together."""
    import fcntl

    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
