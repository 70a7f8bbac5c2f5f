"""Result records: layout, predictions round trip, schema and value rules, verification."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from record_support import binary_predictions, make_record, write_submission

from medfm.io import sha256_file
from medfm.predictions import Predictions
from medfm.records import (
    RecordError,
    canonical_relpath,
    cell_paths,
    iter_records,
    load_record,
    parse_stem,
    read_predictions,
    record_schema,
    safe_name,
    validate_record,
    write_predictions,
    write_record,
)
from medfm.verification import verify_file

SAFE = re.compile(r"^[A-Za-z0-9._@=+-]+$")
FILE_PATTERN = re.compile(record_schema()["properties"]["predictions"]["properties"]["file"]["pattern"])


def rewrite(path: Path, change) -> dict:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return record


# ------------------------------------------------------------------ names and layout
@pytest.mark.parametrize(
    "name",
    [
        "timm/vit_b@448",
        "a b/c?d*e",
        "../../etc/passwd",
        ".hidden",
        "..",
        "/",
        "",
        "ünïcødé/模型",
        "x" * 400,
        "hf-hub:org/model",
        "a\\b",
        "name\nwith\nlines",
    ],
)
def test_safe_name_is_a_safe_single_path_component(name):
    safe = safe_name(name)
    assert SAFE.match(safe), safe
    assert not safe.startswith(".")  # hidden files are skipped by the scan
    assert safe not in (".", "..") and "/" not in safe and 0 < len(safe) <= 150


def test_safe_name_keeps_readable_names():
    assert safe_name("timm/vit_b@448") == "timm--vit_b@448"
    for name in ("efficientnet_lite0.in1k", "knn", "linear_probe", "resnet50@448"):
        assert safe_name(name) == name


def test_distinct_names_get_distinct_files():
    for a, b in [("a/b", "a--b"), ("x y", "x_y")]:
        assert safe_name(a) != safe_name(b)


def test_cell_paths_layout_one_file_per_submitter_and_seed(tmp_path):
    paths = cell_paths(tmp_path, "timm/vit_b@448", "medmnist/breastmnist", "linear_probe", "alice", 3)
    assert paths.record.relative_to(tmp_path).parts == (
        safe_name("timm/vit_b@448"),
        safe_name("medmnist/breastmnist"),
        "linear_probe",
        "alice.seed3.json",
    )
    assert paths.predictions.name == "alice.seed3.predictions.npz" and FILE_PATTERN.match(paths.predictions.name)
    assert paths.work.name == "alice.seed3.work" and paths.lock.name.startswith(".")
    other = cell_paths(tmp_path, "timm/vit_b@448", "medmnist/breastmnist", "linear_probe", "bob", 3)
    reseeded = cell_paths(tmp_path, "timm/vit_b@448", "medmnist/breastmnist", "linear_probe", "alice", 4)
    assert len({paths.record, other.record, reseeded.record}) == 3
    assert parse_stem("alice.seed3") == ("alice", 3) and parse_stem("Alice.seed3") is None
    assert parse_stem("alice.seed-1") is None and parse_stem("a.b.seed1") is None


# ------------------------------------------------------------------ predictions
@pytest.mark.parametrize("with_groups", [False, True])
def test_predictions_round_trip(tmp_path, with_groups):
    preds = binary_predictions(groups=with_groups)
    path = tmp_path / "p.predictions.npz"
    pointer = write_predictions(path, preds)
    assert pointer == {"file": path.name, "sha256": sha256_file(path), "n": len(preds.ids)}
    back = read_predictions(path)
    assert back.ids == list(preds.ids)
    np.testing.assert_array_equal(back.labels, preds.labels)
    assert back.scores.dtype == np.float64
    np.testing.assert_allclose(back.scores, preds.scores, rtol=1e-6, atol=1e-7)  # stored as float32
    assert (back.groups is None) == (not with_groups)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic write leaves no temp file


def test_multilabel_predictions_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (20, 4))
    preds = Predictions(ids=[str(i) for i in range(20)], labels=labels, scores=rng.random((20, 4)))
    write_predictions(tmp_path / "m.predictions.npz", preds)
    back = read_predictions(tmp_path / "m.predictions.npz")
    np.testing.assert_array_equal(back.labels, labels)
    assert back.scores.shape == (20, 4)


def test_object_arrays_and_unknown_members_are_refused(tmp_path):
    path = tmp_path / "evil.predictions.npz"
    np.savez(path, ids=np.array(["a", "b"], dtype=object), labels=np.array([0, 1]), scores=np.zeros((2, 2)))
    with pytest.raises(RecordError, match="object array"):
        read_predictions(path)
    np.savez(path, ids=np.array(["a", "b"]), labels=np.array([0, 1]), scores=np.zeros((2, 2)), payload=np.zeros(3))
    with pytest.raises(RecordError, match="unexpected members"):
        read_predictions(path)
    np.savez(path, ids=np.array(["a", "b"]), labels=np.array([0, 1]))
    with pytest.raises(RecordError, match="no 'scores'"):
        read_predictions(path)


# ------------------------------------------------------------------ schema and value rules
def test_honest_record_verifies_and_round_trips(tmp_path):
    path = write_submission(tmp_path, binary_predictions())
    record = load_record(path, verify=True)
    assert canonical_relpath(record) == path.relative_to(tmp_path).as_posix()
    assert record["test_set"]["n"] == 120 and record["ci"]["resamples"] == 1000


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("config_hash"), "config_hash"),
        (lambda r: r.update(seed="zero"), "seed"),
        (lambda r: r["backbone"].pop("name"), "backbone"),
        (lambda r: r["predictions"].update(file="../../escape.npz"), "predictions/file"),
        (lambda r: r["predictions"].update(n=0), "predictions/n"),
        (lambda r: r["metrics"]["auroc"].update(value="0.9"), "metrics/auroc/value"),
        (lambda r: r["metrics"]["auroc"].update(value=3.0), "metrics/auroc/value"),
        (lambda r: r.pop("flags"), "flags"),
        (lambda r: r.update(status="maybe"), "status"),
        (lambda r: r["dataset"].update(task="regression"), "dataset/task"),
        (lambda r: r.update(surprise=1), "surprise"),
        (lambda r: r["backbone"].update(note="hi"), "note"),
        (lambda r: r["submission"].update(submitter="Alice Smith"), "submission/submitter"),
        (lambda r: r["backbone"].update(name="a\u200bb"), "backbone/name"),
        (lambda r: r["extra"].update(note="x\u202ey"), "extra/note"),
        (lambda r: r["extra"].update(big=1e300), "extra/big"),
        (lambda r: r["ci"].update(resamples=10**9), "ci/resamples"),
    ],
)
def test_write_record_rejects_invalid_record_naming_the_field(tmp_path, mutate, field):
    record = make_record(binary_predictions())
    record["predictions"] = {"file": "alice.seed0.predictions.npz", "sha256": "a" * 64, "n": 120}
    validate_record(record)
    mutate(record)
    target = tmp_path / "new" / "bad.json"
    with pytest.raises(RecordError) as info:
        write_record(target, record)
    message = str(info.value)
    assert field in message and str(target) in message
    assert not target.exists()


def test_old_schema_versions_are_named(tmp_path):
    record = make_record(binary_predictions())
    record["schema_version"] = 1
    with pytest.raises(RecordError, match="schema version 1 is not the current 2"):
        validate_record(record, "r.json")


def test_error_record_needs_error_object(tmp_path):
    record = make_record(binary_predictions())
    for key in ("metrics", "predictions", "flags", "primary_metric", "test_set", "ci"):
        record.pop(key)
    record["status"] = "error"
    record["error"] = None
    with pytest.raises(RecordError, match="error"):
        validate_record(record)
    record["error"] = {"type": "ValueError", "message": "bad\nsecond line", "traceback": "Traceback\n  x"}
    paths = cell_paths(tmp_path, "timm/net", record["dataset"]["name"], "knn", "alice", 0)
    write_record(paths.record, record)
    assert load_record(paths.record, verify=True)["status"] == "error"  # nothing else to verify


# ------------------------------------------------------------------ verification
def test_verify_detects_tampered_predictions(tmp_path):
    path = write_submission(tmp_path, binary_predictions())
    write_predictions(path.with_name("alice.seed0.predictions.npz"), binary_predictions(seed=5))
    load_record(path)  # schema alone is still fine
    with pytest.raises(RecordError, match="sha256"):
        load_record(path, verify=True)


def test_verify_detects_missing_predictions(tmp_path):
    path = write_submission(tmp_path, binary_predictions())
    path.with_name("alice.seed0.predictions.npz").unlink()
    with pytest.raises(RecordError, match="no such file"):
        load_record(path, verify=True)


def test_verify_detects_forged_metric_and_forged_interval(tmp_path):
    path = write_submission(tmp_path, binary_predictions())
    good = json.loads(path.read_text())
    rewrite(path, lambda r: r["metrics"]["auroc"].update(value=round(r["metrics"]["auroc"]["value"] + 0.01, 6)))
    with pytest.raises(RecordError, match="auroc is .* recomputed"):
        load_record(path, verify=True)
    path.write_text(json.dumps(good))
    rewrite(path, lambda r: r["metrics"]["auroc"].update(ci_low=round(r["metrics"]["auroc"]["ci_low"] + 0.02, 6)))
    with pytest.raises(RecordError, match="auroc ci_low"):
        load_record(path, verify=True)
    iterated = list(iter_records(tmp_path, verify=True))
    assert len(iterated) == 1 and iterated[0][1] is None and "ci_low" in iterated[0][2]


def test_verify_requires_the_recomputed_flags(tmp_path):
    preds = binary_predictions(strength=0.0, seed=3)  # chance level: chance_auroc
    path = write_submission(tmp_path, preds)
    record = load_record(path, verify=True)
    assert "chance_auroc" in record["flags"]
    rewrite(path, lambda r: r.update(flags=[]))
    with pytest.raises(RecordError, match="chance_auroc"):
        load_record(path, verify=True)


def test_verify_rejects_a_test_identity_that_the_predictions_do_not_have(tmp_path):
    path = write_submission(tmp_path, binary_predictions())
    rewrite(path, lambda r: r["test_set"].update(identity="0" * 64))
    with pytest.raises(RecordError, match="test-set identity"):
        load_record(path, verify=True)


def test_verify_rejects_a_record_that_lives_elsewhere_than_its_names_say(tmp_path):
    path = write_submission(tmp_path, binary_predictions())
    moved = tmp_path / "other--net" / path.relative_to(tmp_path).parts[1] / "knn" / path.name
    moved.parent.mkdir(parents=True)
    for f in path.parent.iterdir():
        if not f.name.startswith("."):
            f.rename(moved.parent / f.name)
    checked = verify_file(moved, tmp_path)
    assert not checked.valid and "belongs at" in checked.problem


def test_resample_counts_below_1000_are_kept_but_unranked(tmp_path):
    path = write_submission(tmp_path, binary_predictions(), resamples=200)
    checked = verify_file(path, tmp_path)
    assert checked.valid and any("200 bootstrap resamples" in r for r in checked.unranked)
    path0 = write_submission(tmp_path, binary_predictions(), resamples=0, submitter="bob")
    checked0 = verify_file(path0, tmp_path)
    assert checked0.valid and "no confidence intervals" in checked0.unranked


def test_small_test_sets_and_wide_intervals_are_warned(tmp_path):
    path = write_submission(tmp_path, binary_predictions(n=40, strength=0.1))
    checked = verify_file(path, tmp_path)
    auroc = checked.record["metrics"]["auroc"]
    assert auroc["ci_high"] - auroc["ci_low"] > 0.2  # 40 cases, a weak signal
    assert checked.valid and checked.unranked == []
    assert "small test set (40 cases)" in checked.warnings and any(
        w.startswith("wide 95% CI") for w in checked.warnings
    )
    big = verify_file(write_submission(tmp_path, binary_predictions(n=400, strength=0.3), submitter="bob"), tmp_path)
    assert big.valid and big.warnings == []


# ------------------------------------------------------------------ reading errors
def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "schema_version": 2,\n  "status": "ok",\n  "seed": ,\n}\n', encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_record(path)
    message = str(info.value)
    assert str(path) in message and "line 4" in message and "column 11" in message


def test_missing_record_file(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        load_record(tmp_path / "nope.json")


def test_iter_records_sorted_and_reports_errors(tmp_path):
    good_path = write_submission(tmp_path, binary_predictions())
    bad = good_path.parent / "aaa.seed0.json"
    bad.write_text("{not json", encoding="utf-8")
    (good_path.parent / ".hidden.json").write_text("{not json either", encoding="utf-8")
    got = list(iter_records(tmp_path))
    assert [p for p, _, _ in got] == sorted([bad, good_path])
    assert got[0][1] is None and "not valid JSON" in got[0][2]
    assert got[1][1] is not None and got[1][2] is None
    assert list(iter_records(tmp_path / "does-not-exist")) == []
