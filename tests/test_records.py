"""Result records: safe file names, predictions round trip, schema validation, verification."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from medfm.metrics import degenerate_flags
import pytest

from medfm.context import Predictions
from medfm.io import sha256_file
from medfm.metrics import evaluate, point_metrics
from medfm.records import (RecordError, cell_paths, iter_records, load_record, read_predictions, record_schema,
                           safe_name, validate_record, write_predictions, write_record)

SAFE = re.compile(r"^[A-Za-z0-9._@=+-]+$")
FILE_PATTERN = re.compile(record_schema()["properties"]["predictions"]["properties"]["file"]["pattern"])


# ------------------------------------------------------------------ helpers
def binary_predictions(n: int = 60, seed: int = 0, groups: bool = False) -> Predictions:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    p = np.clip(0.5 + 0.25 * (2 * labels - 1) + rng.normal(0, 0.2, n), 0.01, 0.99)
    return Predictions(ids=[f"img/{i}.png" for i in range(n)], labels=labels, scores=np.c_[1 - p, p],
                       groups=np.array([f"patient-{i // 3}" for i in range(n)]) if groups else None)


def ok_record(folder: Path, predictions: Predictions, task: str = "binary", stem: str = "knn") -> tuple[Path, dict]:
    """Write predictions and a consistent record for them; return (record path, record)."""
    paths = cell_paths(folder, "timm/net@448", "medmnist/breastmnist", stem)
    pointer = write_predictions(paths.predictions, predictions)
    stored = read_predictions(paths.predictions)
    metrics = evaluate(task, stored.labels, stored.scores, resamples=50)
    prov = {"name": "test", "distribution": "medfm", "version": "0"}
    record = {
        "schema_version": 1, "status": "ok",
        "backbone": {"name": "timm/net@448", "revision": "1", "plugin": prov},
        "dataset": {"name": "medmnist/breastmnist", "revision": "1", "plugin": prov, "task": task},
        "protocol": {"name": stem, "version": "1", "plugin": prov},
        "config": {"seed": 0}, "config_hash": "f" * 64, "seed": 0,
        "versions": {"medfm": "0.1", "torch": "2", "timm": "1", "python": "3.11"}, "device": "cpu",
        "primary_metric": "auroc", "metrics": {k: v.as_dict() for k, v in metrics.items()},
        "flags": [], "predictions": pointer,
    }
    write_record(paths.record, record)
    return paths.record, record


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["timm/vit_b@448", "a b/c?d*e", "../../etc/passwd", ".hidden", "..", "/", "",
                                  "ünïcødé/模型", "x" * 400, "hf-hub:org/model", "a\\b", "name\nwith\nlines"])
def test_safe_name_is_a_safe_single_path_component(name):
    safe = safe_name(name)
    assert SAFE.match(safe), safe
    assert not safe.startswith(".")  # hidden files are skipped by iter_records
    assert safe not in (".", "..") and "/" not in safe and 0 < len(safe) <= 150
    assert FILE_PATTERN.match(safe + ".predictions.npz")


def test_safe_name_keeps_readable_names():
    # the documented example, and names that are already safe are unchanged
    assert safe_name("timm/vit_b@448") == "timm--vit_b@448"
    for name in ("efficientnet_lite0.in1k", "knn", "linear_probe", "resnet50@448"):
        assert safe_name(name) == name


def test_distinct_names_get_distinct_files():
    for a, b in [("a/b", "a--b"), ("x y", "x_y")]:
        assert safe_name(a) != safe_name(b)


def test_cell_paths_layout(tmp_path):
    paths = cell_paths(tmp_path, "timm/vit_b@448", "medmnist/breastmnist", "linear_probe")
    assert paths.record.parent == paths.predictions.parent
    assert paths.record.parent.relative_to(tmp_path).parts == (safe_name("timm/vit_b@448"),
                                                                 safe_name("medmnist/breastmnist"))
    assert paths.record.name.endswith(".json") and FILE_PATTERN.match(paths.predictions.name)


# ------------------------------------------------------------------ predictions
@pytest.mark.parametrize("with_groups", [False, True])
def test_predictions_round_trip(tmp_path, with_groups):
    preds = binary_predictions(groups=with_groups)
    path = tmp_path / "p.predictions.npz"
    pointer = write_predictions(path, preds)
    assert pointer == {"file": path.name, "sha256": sha256_file(path), "n": len(preds.ids)}
    back = read_predictions(path)
    assert [str(i) for i in back.ids] == list(preds.ids)
    np.testing.assert_array_equal(back.labels, preds.labels)
    assert back.scores.dtype == np.float64
    np.testing.assert_allclose(back.scores, preds.scores, rtol=1e-6, atol=1e-7)  # stored as float32
    if with_groups:
        assert [str(g) for g in back.groups] == list(preds.groups)
    else:
        assert back.groups is None
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic write leaves no temp file


def test_multilabel_predictions_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (20, 4))
    preds = Predictions(ids=[str(i) for i in range(20)], labels=labels, scores=rng.random((20, 4)))
    write_predictions(tmp_path / "m.npz", preds)
    back = read_predictions(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.labels, labels)
    assert back.scores.shape == (20, 4)


# ------------------------------------------------------------------ validation
def test_valid_record_round_trips(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    assert load_record(path, verify=True) == json.loads(json.dumps(record))
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("config_hash"), "config_hash"),
    (lambda r: r.update(seed="zero"), "seed"),
    (lambda r: r["backbone"].pop("name"), "backbone"),
    (lambda r: r["predictions"].update(file="../../escape.npz"), "predictions/file"),
    (lambda r: r["predictions"].update(n=0), "predictions/n"),
    (lambda r: r["metrics"]["auroc"].update(value="0.9"), "metrics/auroc/value"),
    (lambda r: r.pop("flags"), "flags"),
    (lambda r: r.update(status="maybe"), "status"),
    (lambda r: r["dataset"].update(task="regression"), "dataset/task"),
])
def test_write_record_rejects_invalid_record_naming_the_field(tmp_path, mutate, field):
    _, record = ok_record(tmp_path, binary_predictions())
    mutate(record)
    target = tmp_path / "new" / "bad.json"
    with pytest.raises(RecordError) as info:
        write_record(target, record)
    message = str(info.value)
    assert field in message and str(target) in message
    assert not target.exists()


def test_error_record_needs_error_object(tmp_path):
    _, record = ok_record(tmp_path, binary_predictions())
    error_record = {k: v for k, v in record.items() if k not in ("metrics", "predictions", "flags", "primary_metric")}
    error_record["status"] = "error"
    with pytest.raises(RecordError, match="error"):
        validate_record(error_record)
    error_record["error"] = {"type": "ValueError", "message": "bad"}
    validate_record(error_record)
    path = tmp_path / "err.json"
    write_record(path, error_record)
    assert load_record(path, verify=True)["status"] == "error"  # nothing to verify


# ------------------------------------------------------------------ verification
def test_verify_detects_tampered_predictions(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    other = binary_predictions(seed=5)
    write_predictions(path.parent / record["predictions"]["file"], other)  # same name, new content
    load_record(path)  # schema alone is still fine
    with pytest.raises(RecordError, match="sha256"):
        load_record(path, verify=True)


def test_verify_detects_flipped_byte(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    pred_path = path.parent / record["predictions"]["file"]
    data = bytearray(pred_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    pred_path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="sha256"):
        load_record(path, verify=True)


def test_verify_detects_missing_predictions(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    (path.parent / record["predictions"]["file"]).unlink()
    with pytest.raises(RecordError, match="missing"):
        load_record(path, verify=True)


def test_verify_detects_metric_not_supported_by_predictions(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    record["metrics"]["auroc"]["value"] = min(1.0, record["metrics"]["auroc"]["value"] + 0.05)
    write_record(path, record)  # schema-valid, but a lie
    with pytest.raises(RecordError, match="auroc"):
        load_record(path, verify=True)
    iterated = list(iter_records(tmp_path, verify=True))
    assert len(iterated) == 1 and iterated[0][1] is None and "auroc" in iterated[0][2]


def test_verify_detects_wrong_prediction_count(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    record["predictions"]["n"] += 1
    write_record(path, record)
    with pytest.raises(RecordError, match="predictions"):
        load_record(path, verify=True)


def test_verify_tolerates_rounding_of_stored_metrics(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    stored = read_predictions(path.parent / record["predictions"]["file"])
    recomputed = point_metrics("binary", stored.labels, stored.scores)
    for name, value in recomputed.items():
        assert record["metrics"][name]["value"] == pytest.approx(value, abs=1e-6)
    load_record(path, verify=True)


def test_verify_record_without_task_is_a_record_error(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    del record["dataset"]["task"]
    write_record(path, record)  # the schema accepts it
    with pytest.raises(RecordError):
        load_record(path, verify=True)


def test_honest_record_from_float64_scores_verifies(tmp_path):
    # what Runner._execute does: round scores to the stored float32, compute metrics and flags, store
    n = 40
    labels = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
    p = 0.5 + (2 * labels - 1) * 1e-12 * (1 + np.arange(n))  # separable, but only beyond float32 precision
    scores = np.c_[1 - p, p].astype(np.float32).astype(np.float64)
    preds = Predictions(ids=[str(i) for i in range(n)], labels=labels, scores=scores)
    metrics = evaluate("binary", preds.labels, preds.scores, resamples=20)
    path, record = ok_record(tmp_path, preds)
    record["metrics"] = {k: v.as_dict() for k, v in metrics.items()}
    record["flags"] = degenerate_flags("binary", preds.labels, preds.scores, metrics)
    write_record(path, record)
    load_record(path, verify=True)


def test_verify_rejects_unverifiable_primary_metric(tmp_path):
    path, record = ok_record(tmp_path, binary_predictions())
    record["metrics"]["auroc_v2"] = {"value": 0.999, "ci_low": 0.998, "ci_high": 1.0}
    record["primary_metric"] = "auroc_v2"  # what the leaderboard ranks by
    write_record(path, record)
    with pytest.raises(RecordError):
        load_record(path, verify=True)


# ------------------------------------------------------------------ reading errors
def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "schema_version": 1,\n  "status": "ok",\n  "seed": ,\n}\n', encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_record(path)
    message = str(info.value)
    assert str(path) in message and "line 4" in message and "column 11" in message


def test_missing_record_file(tmp_path):
    with pytest.raises(RecordError, match="no such record"):
        load_record(tmp_path / "nope.json")


def test_iter_records_sorted_and_reports_errors(tmp_path):
    good_path, _ = ok_record(tmp_path, binary_predictions(), stem="knn")
    bad = good_path.parent / "aaa.json"
    bad.write_text("{not json", encoding="utf-8")
    (good_path.parent / ".hidden.json").write_text("{not json either", encoding="utf-8")
    got = list(iter_records(tmp_path))
    assert [p for p, _, _ in got] == sorted([bad, good_path])
    assert got[0][1] is None and "not valid JSON" in got[0][2]
    assert got[1][1] is not None and got[1][2] is None
    assert list(iter_records(tmp_path / "does-not-exist")) == []
