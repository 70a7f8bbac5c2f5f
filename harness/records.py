"""Result records: one JSON file per cell, with per-sample predictions beside it.

Records are validated against ``record_schema.json`` when written and when read. Reading
with ``verify=True`` also checks the predictions file's sha256 and recomputes the metrics
from it, so a submitted record cannot claim numbers its predictions do not support.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import numpy as np

from .context import Predictions
from .errors import UserError
from .io import atomic_path, sha256_file, write_json
from .metrics import degenerate_flags, point_metrics

SCHEMA_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._@=+-]+")


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


class RecordError(UserError):
    """A record or its predictions failed validation."""


def validate_record(record: dict[str, Any], where: str = "record") -> None:
    """Raise ``RecordError`` naming the first schema violation."""
    try:
        jsonschema.validate(record, record_schema())
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise RecordError(f"{where}: invalid at {path}: {exc.message}") from None


@dataclass(frozen=True)
class CellPaths:
    """Where one cell's record and predictions live."""

    record: Path
    predictions: Path
    failed: Path


FAILED_SUFFIX = ".failed.json"


def cell_paths(results_dir: str | Path, backbone: str, dataset: str, protocol: str) -> CellPaths:
    """``results/<backbone>/<dataset>/<protocol>.json`` with sanitised names; ``failed`` holds the
    last failed attempt when it did not replace an earlier good record (not a record itself)."""
    folder = Path(results_dir) / safe_name(backbone) / safe_name(dataset)
    stem = safe_name(protocol)
    return CellPaths(folder / f"{stem}.json", folder / f"{stem}.predictions.npz", folder / f"{stem}{FAILED_SUFFIX}")


def is_record_file(path: Path) -> bool:
    """Whether a JSON file under a results folder is a record (not hidden, not a failed-attempt note)."""
    return path.suffix == ".json" and not path.name.startswith(".") and not path.name.endswith(FAILED_SUFFIX)


def write_predictions(path: Path, predictions: Predictions) -> dict[str, Any]:
    """Store predictions compactly (compressed npz, float32 scores); return the record's pointer."""
    arrays = {
        "ids": np.asarray([str(i) for i in predictions.ids], dtype=str),
        "labels": np.asarray(predictions.labels).astype(np.int16 if np.asarray(predictions.labels).max(initial=0) < 32000 else np.int64),
        "scores": np.asarray(predictions.scores, dtype=np.float32),
    }
    if predictions.groups is not None:
        arrays["groups"] = np.asarray([str(g) for g in predictions.groups], dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return {"file": path.name, "sha256": sha256_file(path), "n": int(len(arrays["ids"]))}


def read_predictions(path: Path) -> Predictions:
    """Load predictions written by ``write_predictions`` (no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        groups = data["groups"] if "groups" in data.files else None
        return Predictions(ids=list(data["ids"]), labels=data["labels"], scores=data["scores"].astype(np.float64),
                           groups=groups)


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Validate, then write atomically."""
    validate_record(record, str(path))
    write_json(path, record)


def load_record(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """Read and validate a record; with ``verify``, also check its predictions and metrics."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record file") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    validate_record(record, str(path))
    if verify and record["status"] == "ok":
        verify_predictions(path, record)
    return record


def verify_predictions(path: Path, record: dict[str, Any], tolerance: float = 1e-4) -> None:
    """Check the predictions file's hash, then recompute every point metric from it."""
    pointer = record["predictions"]
    pred_path = path.parent / pointer["file"]
    if not pred_path.exists():
        raise RecordError(f"{path}: predictions file {pointer['file']} is missing beside the record")
    if sha256_file(pred_path) != pointer["sha256"]:
        raise RecordError(f"{path}: predictions file {pointer['file']} does not match the sha256 in the record")
    preds = read_predictions(pred_path)
    if len(preds.ids) != pointer["n"]:
        raise RecordError(f"{path}: record says {pointer['n']} predictions, file has {len(preds.ids)}")
    task = record["dataset"].get("task")
    if task is None:
        raise RecordError(f"{path}: dataset.task is missing, so its metrics cannot be checked")
    try:
        recomputed = point_metrics(task, preds.labels, preds.scores)
    except Exception as exc:
        raise RecordError(f"{path}: metrics cannot be recomputed from {pointer['file']}: {exc}") from None
    unknown = sorted(set(record["metrics"]) - set(recomputed))
    if unknown:
        raise RecordError(f"{path}: metrics {unknown} cannot be recomputed from the predictions for a {task} task")
    if record.get("primary_metric") not in recomputed:
        raise RecordError(f"{path}: primary metric {record.get('primary_metric')!r} is not a {task} metric")
    if "collapsed_predictions" in degenerate_flags(task, preds.labels, preds.scores, {}) and \
            "collapsed_predictions" not in (record.get("flags") or []):
        raise RecordError(f"{path}: its predictions collapse to one class but the record lacks that flag")
    for name, claimed in record["metrics"].items():
        value = claimed.get("value")
        if name in recomputed and value is not None and math.isfinite(recomputed[name]):
            if abs(recomputed[name] - value) > tolerance:
                raise RecordError(f"{path}: metric {name} is {value} in the record but "
                                  f"{recomputed[name]:.6f} from its predictions")


def iter_records(results_dir: str | Path, verify: bool = False) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every record under ``results_dir`` as (path, record or None, error or None), sorted."""
    root = Path(results_dir)
    if not root.exists():
        return
    for path in sorted(root.rglob("*.json")):
        if not is_record_file(path):
            continue
        try:
            yield path, load_record(path, verify=verify), None
        except RecordError as exc:
            yield path, None, str(exc)
