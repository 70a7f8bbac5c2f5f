"""Every frozen-feature protocol through the real runner on synthetic features with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_support import feature_task, run_config

from medfm.metrics import class_auroc_name
from medfm.records import load_record
from medfm.runner import Runner

PROTOCOLS = ["knn", "linear_probe", "logistic_regression", "few_shot_prototype", "few_shot_knn", "few_shot_linear"]
FAST = {"linear_probe": {"epochs": 20}}
TASKS = [("binary", 2, "auroc"), ("multiclass", 4, "auroc"), ("ordinal", 5, "kappa"), ("multilabel", 4, "auroc")]


def run_all(registry_factory, tmp_path: Path, task, protocols=PROTOCOLS, options=FAST, seed=0, bootstrap=300):
    cfg = run_config(tmp_path, task, protocols, options=options, seed=seed, bootstrap=bootstrap)
    outcomes = Runner(registry_factory(task), cfg).run()
    assert [o.status for o in outcomes] == ["ok"] * len(protocols), [o.message for o in outcomes]
    return {o.cell.protocol.name: load_record(o.record_path, verify=True) for o in outcomes}


@pytest.mark.parametrize("task,n_classes,primary", TASKS)
def test_separable_classes_are_learned_by_every_protocol(registry_factory, tmp_path, task, n_classes, primary):
    """Well-separated classes: AUROC near 1 (and high quadratic kappa for the ordinal task), no flags."""
    data = feature_task(
        f"sep-{task}", task, n_classes, margin=4.0, primary_metric=primary, kinds={"cls": 4.0, "last4_cls": 4.0}
    )
    records = run_all(registry_factory, tmp_path, data)
    for name, r in records.items():
        m = r["metrics"]
        assert m["auroc"]["value"] > 0.95, (name, m["auroc"])
        assert m["auroc"]["ci_low"] <= m["auroc"]["value"] <= m["auroc"]["ci_high"]
        assert r["flags"] == ["few_resamples"], (name, r["flags"])  # 300 resamples here: nothing else
        assert r["primary_metric"] == primary and primary in m
        if task == "ordinal":
            assert m["kappa"]["value"] > 0.8, (name, m["kappa"])
        if task != "binary":  # per-class AUROC, each with its interval
            for c in range(n_classes):
                assert m[class_auroc_name(c)]["value"] > 0.9, (name, c)
                assert m[class_auroc_name(c)]["ci_low"] is not None
        if task != "multilabel":
            assert {"accuracy", "balanced_accuracy", "f1_macro", "kappa", "auprc"} <= set(m)
        assert r["ci"]["resamples"] == 300


def test_random_features_give_chance_intervals_and_are_flagged(registry_factory, tmp_path):
    """Features independent of the labels: AUROC near 0.5, intervals that contain 0.5 at about the
    nominal rate (95%; at least 80% of the 18 cells asserted), and every such result flagged.

    A 95% interval misses 0.5 in 1 of 20 chance results; the flag also covers an interval below
    0.5, so only a miss above 0.5 (1 in 40) escapes it, which is the nominal error rate."""
    contains = flagged = total = 0
    for task, n_classes in (("binary", 2), ("multiclass", 3), ("multilabel", 3)):
        data = feature_task(f"random-{task}", task, n_classes, margin=0.0)
        records = run_all(registry_factory, tmp_path / task, data)
        for name, r in records.items():
            auroc = r["metrics"]["auroc"]
            assert abs(auroc["value"] - 0.5) < 0.12, (task, name, auroc)
            inside = auroc["ci_low"] <= 0.5 <= auroc["ci_high"]
            if inside or auroc["ci_high"] < 0.5:
                assert "chance_auroc" in r["flags"], (task, name, auroc)
            contains += inside
            flagged += "chance_auroc" in r["flags"]
            total += 1
    assert contains >= 0.8 * total, (contains, total)
    assert flagged >= 0.85 * total, (flagged, total)


def test_flagged_results_are_marked_on_the_leaderboard_not_ranked(registry_factory, tmp_path):
    data = feature_task("random-lb", "binary", 2, margin=0.0)
    run_all(registry_factory, tmp_path, data, protocols=["knn"])
    text = (tmp_path / "leaderboard.md").read_text()
    row = next(line for line in text.splitlines() if "`table/random-lb`" in line)
    assert row.startswith("- ") and "⚠ 0." in row and "flagged: chance_auroc" in row  # shown with its reason
    assert not any("`table/random-lb`" in line for line in text.splitlines() if line.startswith("| "))  # not ranked


def test_same_seed_same_numbers_other_seed_other_episodes(registry_factory, tmp_path):
    data = feature_task("seeded", "multiclass", 3, margin=1.0, patients=2)
    first = run_all(registry_factory, tmp_path / "a", data)
    second = run_all(registry_factory, tmp_path / "b", data)
    for name in PROTOCOLS:
        for key in ("metrics", "selected", "extra", "flags", "seed"):
            assert first[name][key] == second[name][key], (name, key)
    other = run_all(registry_factory, tmp_path / "c", data, seed=1)
    assert other["few_shot_prototype"]["extra"]["curve"] != first["few_shot_prototype"]["extra"]["curve"]
    assert other["knn"]["metrics"]["auroc"] != first["knn"]["metrics"]["auroc"]  # bootstrap draws differ


def test_patient_ids_switch_the_bootstrap_to_patients(registry_factory, tmp_path):
    data = feature_task("patients", "binary", 2, margin=1.0, patients=3)
    records = run_all(registry_factory, tmp_path, data, protocols=["logistic_regression"])
    assert records["logistic_regression"]["ci"]["unit"] == "patient"


def test_linear_probe_grid_spans_offered_kinds_and_skips_the_rest(registry_factory, tmp_path):
    """Default kinds (default=CLS, CLS+mean patch, last-4 CLS): a backbone offering two of them
    trains two banks; the informative kind wins on validation."""
    data = feature_task("kinds", "binary", 2, kinds={"cls": 0.0, "last4_cls": 3.0})
    r = run_all(registry_factory, tmp_path, data, protocols=["linear_probe"])["linear_probe"]
    assert r["extra"]["feature_kinds"] == ["cls", "last4_cls"]
    assert r["extra"]["skipped_kinds"] == ["cls_mean_patch"]
    assert r["extra"]["heads"] == 2 * 24 == len(r["extra"]["grid"])
    assert r["selected"]["feature_kind"] == "last4_cls"
    assert r["backbone"]["feature_kind"] == "cls,last4_cls"
    best = max(g["val"] for g in r["extra"]["grid"])
    assert r["selected"]["val_auroc"] == best


def test_linear_probe_on_a_cnn_uses_its_pooled_features(registry_factory, tmp_path):
    data = feature_task("cnn", "binary", 2, kinds={"gap": 3.0})
    r = run_all(registry_factory, tmp_path, data, protocols=["linear_probe"])["linear_probe"]
    assert r["extra"]["feature_kinds"] == ["gap"]
    assert r["extra"]["skipped_kinds"] == ["cls_mean_patch", "last4_cls"]
    assert r["metrics"]["auroc"]["value"] > 0.95


def test_linear_probe_stops_early_and_keeps_each_heads_best_epoch(registry_factory, tmp_path):
    data = feature_task("early", "binary", 2, margin=4.0)
    options = {"linear_probe": {"epochs": 200, "eval_every": 1, "patience": 3, "lrs": [1e-2], "weight_decays": [0.0]}}
    r = run_all(registry_factory, tmp_path, data, protocols=["linear_probe"], options=options)["linear_probe"]
    assert r["extra"]["epochs_run"] < 200  # separable at once: no improvement for 3 evaluations
    curve = r["extra"]["validation_curve"]
    assert r["selected"]["epoch"] == next(c["epoch"] for c in curve if c["best_val"] == curve[-1]["best_val"])


def test_knn_chooses_k_on_validation(registry_factory, tmp_path):
    data = feature_task("knn-k", "binary", 2, margin=1.0)
    r = run_all(registry_factory, tmp_path, data, protocols=["knn"], options={"knn": {"k_grid": [1, 5, 50]}})["knn"]
    by_k = r["extra"]["validation"]["by_k"]
    assert set(by_k) == {"1", "5", "50"}
    assert by_k[str(r["selected"]["k"])] == max(by_k.values())
    assert by_k["1"] < by_k["50"]  # one neighbour is a noisy vote on overlapping classes


def test_logistic_regression_chooses_c_on_validation(registry_factory, tmp_path):
    data = feature_task("lr-c", "multiclass", 3, margin=1.5, dim=40, sizes=(60, 200, 200))
    r = run_all(registry_factory, tmp_path, data, protocols=["logistic_regression"])["logistic_regression"]
    grid = r["extra"]["grid"]
    assert [g["C"] for g in grid] == sorted(g["C"] for g in grid)
    assert r["selected"]["val_auroc"] == max(g["val"] for g in grid)
    assert r["selected"]["C"] == next(g["C"] for g in grid if g["val"] == r["selected"]["val_auroc"])
    assert r["extra"]["train_log_loss"] > 0
