"""Degenerate runs are flagged in the record and marked on the leaderboard, never ranked as fine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from protocol_support import feature_task, run_config

from medfm.protocols import safe_scores
from medfm.records import load_record
from medfm.runner import Runner
from medfm_plugins.protocols import few_shot, logistic_regression

ALL = ["knn", "linear_probe", "logistic_regression", "few_shot_prototype", "few_shot_knn", "few_shot_linear"]
FAST = {"linear_probe": {"epochs": 10}}


def run(registry_factory, tmp_path, data, protocols, options=FAST):
    cfg = run_config(tmp_path, data, protocols, options=options, bootstrap=200)
    outcomes = Runner(registry_factory(data), cfg).run()
    assert all(o.status == "ok" for o in outcomes), [o.message for o in outcomes]
    return {o.cell.protocol.name: load_record(o.record_path, verify=True) for o in outcomes}


def leaderboard_row(tmp_path, protocol_heading: str, backbone: str) -> str:
    text = (tmp_path / "leaderboard.md").read_text()
    section = text.split(f"### `{protocol_heading} v", 1)[1].split("###", 1)[0]
    return next(line for line in section.splitlines() if f"`{backbone}`" in line)


def test_diverging_linear_probe_is_flagged_nan_loss(registry_factory, tmp_path):
    """A learning rate of 1e38 overflows the logits on the first steps: the loss is NaN."""
    data = feature_task("diverge", "binary", 2, margin=3.0)
    options = {"linear_probe": {"epochs": 5, "lrs": [1e38], "weight_decays": [0.0]}}
    r = run(registry_factory, tmp_path, data, ["linear_probe"], options)["linear_probe"]
    assert "nan_loss" in r["flags"]
    assert r["extra"]["diverged_heads"] == 1
    assert all(math.isfinite(v["value"]) for k, v in r["metrics"].items() if v["value"] is not None)
    row = leaderboard_row(tmp_path, "linear_probe", "table/diverge")
    assert row.startswith("- ") and "⚠" in row and "nan_loss" in row  # listed with its reason, not ranked


def test_one_diverged_head_does_not_flag_the_grid(registry_factory, tmp_path):
    data = feature_task("diverge-one", "binary", 2, margin=3.0)
    options = {"linear_probe": {"epochs": 10, "lrs": [1e38, 1e-2], "weight_decays": [0.0]}}
    r = run(registry_factory, tmp_path, data, ["linear_probe"], options)["linear_probe"]
    assert r["flags"] == ["few_resamples"] and r["extra"]["diverged_heads"] == 1  # (300 resamples)
    assert r["selected"]["lr"] == 1e-2
    assert [g["diverged"] for g in r["extra"]["grid"]] == [True, False]
    assert r["metrics"]["auroc"]["value"] > 0.95


def test_sklearn_protocols_flag_a_non_finite_training_loss(registry_factory, tmp_path, monkeypatch):
    """scikit-learn's L-BFGS does not return NaN weights on finite inputs, so the check on the
    fitted model's training log-loss is exercised by making that loss NaN."""
    monkeypatch.setattr(logistic_regression, "training_loss", lambda *a, **k: math.nan)
    real_linear = few_shot.linear_scores
    monkeypatch.setattr(few_shot, "linear_scores", lambda *a, **k: (real_linear(*a, **k)[0], math.nan))
    data = feature_task("sk-nan", "binary", 2, margin=3.0)
    records = run(registry_factory, tmp_path, data, ["logistic_regression", "few_shot_linear"])
    for name, r in records.items():
        assert "nan_loss" in r["flags"], name


def test_non_finite_features_are_flagged_by_every_protocol(registry_factory, tmp_path):
    data = feature_task("nan-features", "binary", 2, margin=3.0, kinds={"cls": 3.0})
    data.features["cls"]["train"][5, 3] = np.nan
    data.features["cls"]["test"][7, 0] = np.inf
    records = run(registry_factory, tmp_path, data, ALL)
    for name, r in records.items():
        assert "non_finite_features" in r["flags"], name
        assert r["metrics"]["auroc"]["value"] > 0.9, name  # one bad value does not ruin the rest
    row = leaderboard_row(tmp_path, "knn", "table/nan-features")
    assert row.startswith("- ") and "⚠" in row and "non_finite_features" in row


def test_constant_features_give_collapsed_predictions(registry_factory, tmp_path):
    data = feature_task("constant", "multiclass", 3, kinds={"cls": 0.0})
    for s in data.features["cls"]:
        data.features["cls"][s][:] = 1.0
    records = run(registry_factory, tmp_path, data, ALL)
    for name, r in records.items():
        assert "collapsed_predictions" in r["flags"], name


def test_non_finite_scores_are_replaced_and_flagged():
    scores = np.array([[0.2, 0.8], [np.nan, 0.5], [0.6, 0.4]])
    fixed, flags = safe_scores("binary", scores)
    assert flags == ["non_finite_scores"] and np.isfinite(fixed).all()
    np.testing.assert_array_equal(fixed[[0, 2]], scores[[0, 2]])
    np.testing.assert_array_equal(fixed[1], [0.5, 0.5])
    ml, flags = safe_scores("multilabel", np.array([[np.inf, 0.1, 0.2]]))
    assert flags == ["non_finite_scores"] and ml.tolist() == [[0.5, 0.5, 0.5]]
    same, flags = safe_scores("binary", scores[[0, 2]])
    assert flags == [] and np.array_equal(same, scores[[0, 2]])


@pytest.mark.parametrize("protocol", ["knn", "logistic_regression", "few_shot_prototype"])
def test_unoffered_feature_kind_is_an_error_naming_it(registry_factory, tmp_path, protocol):
    data = feature_task("no-kind", "binary", 2)
    cfg = run_config(tmp_path, data, [protocol], options={protocol: {"feature_kind": "last4_cls"}})
    outcome = Runner(registry_factory(data), cfg).run()[0]
    assert outcome.status == "error" and "last4_cls" in outcome.message
