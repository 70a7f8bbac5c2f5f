"""Honest result records written the way the runner writes them, for tests of verification,
the leaderboard, the web page and hostile submissions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medfm.io import sha256_json
from medfm.metrics import degenerate_flags, evaluate
from medfm.predictions import Predictions
from medfm.records import SCHEMA_VERSION, cell_paths, write_result
from medfm.test_set import split_identity

DATASET = "synthetic/cxr-nodules"  # first-party, no published test identity
DATASET_REVISION = "generator-1"
KNN_VERSION = "2"


def binary_predictions(
    n: int = 120,
    seed: int = 0,
    strength: float = 0.25,
    groups: bool = False,
    ids: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
) -> Predictions:
    """Scores that separate the classes by ``strength`` plus noise, on a fixed test set."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)] if labels is None else np.asarray(labels)
    p = np.clip(0.5 + strength * (2 * labels - 1) + rng.normal(0, 0.2, len(labels)), 0.01, 0.99)
    return Predictions(
        ids=list(ids) if ids is not None else [f"test/{i}" for i in range(len(labels))],
        labels=labels,
        scores=np.c_[1 - p, p],
        groups=np.array([f"patient-{i // 2}" for i in range(len(labels))]) if groups else None,
    )


def make_record(
    preds: Predictions,
    *,
    backbone: str = "timm/net",
    dataset: str = DATASET,
    protocol: str = "knn",
    submitter: str = "alice",
    seed: int = 0,
    resamples: int = 1000,
    task: str = "binary",
    classes: Sequence[str] = ("no nodule", "nodule"),
    protocol_version: str = KNN_VERSION,
    dataset_revision: str = DATASET_REVISION,
    distribution: str | None = "medfm",
    protocol_distribution: str | None = None,
    weights_sha256: str | None = None,
    options: dict[str, Any] | None = None,
    extra_flags: Sequence[str] = (),
    params: int | None = 1_000_000,
    objective: str = "supervised",
    modality: str = "X-ray (synthetic)",
) -> dict[str, Any]:
    """A record consistent with ``preds`` (metrics, intervals and flags as the runner computes them)."""
    stored = Predictions(
        preds.ids, np.asarray(preds.labels), np.asarray(preds.scores, dtype=np.float32).astype(np.float64), preds.groups
    )
    metrics = evaluate(task, stored.labels, stored.scores, groups=stored.groups, resamples=resamples, seed=seed)
    flags = sorted(set(extra_flags) | set(degenerate_flags(task, stored.labels, stored.scores, metrics)))
    prov = {"name": "test-plugin", "distribution": distribution, "version": "0.1.0"}
    config = {
        "backbone": {"name": backbone, "revision": "1", "options": {}},
        "dataset": {"name": dataset, "revision": dataset_revision, "options": {}},
        "protocol": {"name": protocol, "version": protocol_version, "options": dict(options or {})},
        "seed": seed,
        "bootstrap_resamples": resamples,
        "record_schema": SCHEMA_VERSION,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "submission": {
            "submitter": submitter,
            "date": "2026-12-07T00:00:00Z",
            "harness_version": "0.1.0",
            "harness_commit": None,
            "harness_modified": None,
            "hardware": "test CPU (2 cores)",
            "seed": seed,
        },
        "backbone": {
            "name": backbone,
            "revision": "1",
            "plugin": dict(prov),
            "params": params,
            "weights_sha256": weights_sha256,
            "objective": objective,
        },
        "dataset": {
            "name": dataset,
            "revision": dataset_revision,
            "plugin": dict(prov),
            "task": task,
            "classes": list(classes),
            "primary_metric": "auroc",
            "modality": modality,
            "split_sizes": {"test": len(stored.ids)},
        },
        "test_set": {
            "identity": split_identity(stored.ids, stored.labels, stored.groups),
            "n": len(stored.ids),
            "split": "test",
            "split_file_sha256": None,
        },
        "protocol": {
            "name": protocol,
            "version": protocol_version,
            "plugin": {**prov, "distribution": protocol_distribution or distribution},
        },
        "config": config,
        "config_hash": sha256_json(config),
        "seed": seed,
        "versions": {"medfm": "0.1.0", "torch": "2", "timm": "1", "python": "3.11"},
        "device": "cpu",
        "primary_metric": "auroc",
        "metrics": {k: v.as_dict() for k, v in metrics.items()},
        "ci": {
            "method": "percentile bootstrap",
            "level": 0.95,
            "resamples": resamples,
            "unit": "patient" if stored.groups is not None else "sample",
        }
        if resamples
        else None,
        "flags": flags,
        "selected": {},
        "extra": {},
        "timings": {"total_s": 0.1},
        "predictions": None,
        "error": None,
    }


def write_submission(root: Path, preds: Predictions, **kwargs: Any) -> Path:
    """Write predictions and a consistent record where the layout puts them; return the record path."""
    record = make_record(preds, **kwargs)
    paths = cell_paths(
        root,
        record["backbone"]["name"],
        record["dataset"]["name"],
        record["protocol"]["name"],
        record["submission"]["submitter"],
        record["submission"]["seed"],
    )
    write_result(paths, record, preds)
    return paths.record
