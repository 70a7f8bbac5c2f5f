"""Few-shot: reproducible episodes, support from the training split only, the curve, the report."""

from __future__ import annotations

import numpy as np
import pytest
from protocol_support import feature_task, run_config

from medfm import FeatureSet, UserError
from medfm.records import load_record
from medfm.runner import Runner
from medfm_plugins.protocols.few_shot import check_no_leak, episode_rng, feasible, sample_support

CLASSIFIERS = ("prototype", "knn", "linear")


def _train(task: str, n_classes: int, patients: int | None = None, n: int = 120) -> FeatureSet:
    data = feature_task("fs", task, n_classes, sizes=(n, 10, 10), patients=patients)
    split = data.split("train")
    return FeatureSet(np.zeros((n, 2)), split.labels, split.groups, split.ids, "cls")


def run_few_shot(registry_factory, tmp_path, data, classifiers=CLASSIFIERS, seed=0, **options):
    protocols = [f"few_shot_{c}" for c in classifiers]
    cfg = run_config(tmp_path, data, protocols, bootstrap=200, seed=seed, options={p: options for p in protocols})
    outcomes = Runner(registry_factory(data), cfg).run()
    assert all(o.status == "ok" for o in outcomes), [o.message for o in outcomes]
    return {o.cell.protocol.name.removeprefix("few_shot_"): load_record(o.record_path, verify=True) for o in outcomes}


# ------------------------------------------------------------------ episodes
@pytest.mark.parametrize("task,n_classes", [("binary", 2), ("multiclass", 4), ("ordinal", 5)])
def test_support_has_exactly_n_per_class_and_is_reproducible(task, n_classes):
    train = _train(task, n_classes)
    for n in (1, 4, 8):
        a = sample_support(task, train, n_classes, n, episode_rng(7, n, 0))
        b = sample_support(task, train, n_classes, n, episode_rng(7, n, 0))
        c = sample_support(task, train, n_classes, n, episode_rng(7, n, 1))
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert len(np.unique(a)) == len(a) == n * n_classes
        assert np.bincount(train.labels[a], minlength=n_classes).tolist() == [n] * n_classes


def test_multilabel_support_draws_whole_patients():
    train = _train("multilabel", 3, patients=3, n=150)
    units = np.asarray(train.groups)
    for n in (1, 2, 4):
        support = sample_support("multilabel", train, 3, n, episode_rng(0, n, 0))
        drawn = set(units[support])
        # every image of a drawn patient is in the support, and nobody else's
        assert set(np.flatnonzero(np.isin(units, list(drawn)))) == set(support)
        for c in range(3):  # at least n patients carry each label
            assert len({units[i] for i in support if train.labels[i, c] == 1}) >= n
        assert len(drawn) <= 4 * n  # n per label plus n label-free patients


def test_infeasible_shot_counts_are_detected():
    train = _train("binary", 2, n=10)  # 5 per class
    assert feasible("binary", train, 2, 5) and not feasible("binary", train, 2, 6)


def test_leak_check_rejects_shared_ids_and_patients():
    train = FeatureSet(np.zeros((3, 2)), np.array([0, 1, 0]), np.array(["p1", "p2", "p3"]), ["a", "b", "c"], "cls")
    clean = FeatureSet(np.zeros((2, 2)), np.array([0, 1]), np.array(["p8", "p9"]), ["x", "y"], "cls")
    check_no_leak(train, np.arange(3), clean)
    same_id = FeatureSet(np.zeros((2, 2)), np.array([0, 1]), np.array(["p8", "p9"]), ["x", "b"], "cls")
    with pytest.raises(UserError, match="ids"):
        check_no_leak(train, np.arange(3), same_id)
    same_patient = FeatureSet(np.zeros((2, 2)), np.array([0, 1]), np.array(["p8", "p3"]), ["x", "y"], "cls")
    with pytest.raises(UserError, match="patients"):
        check_no_leak(train, np.arange(3), same_patient)
    check_no_leak(train, np.arange(2), same_patient)  # p3 not drawn: fine


# ------------------------------------------------------------------ through the runner
def test_support_comes_from_train_only_and_test_is_scored_whole(registry_factory, tmp_path):
    data = feature_task("fs-leak", "multiclass", 3, margin=2.0, patients=2)
    records = run_few_shot(registry_factory, tmp_path, data)
    test_ids = {f"test/{i}" for i in range(len(data.labels["test"]))}
    for clf, r in records.items():
        support = r["extra"]["reported_support_ids"]
        assert support and all(s.startswith("train/") for s in support), clf
        assert not set(support) & test_ids
        assert r["predictions"]["n"] == len(test_ids)


def test_curve_holds_every_episode_and_the_reported_one_is_episode_0_of_the_largest_n(registry_factory, tmp_path):
    data = feature_task("fs-curve", "binary", 2, margin=1.0, dim=32)
    records = run_few_shot(registry_factory, tmp_path, data, shots=[1, 2, 4, 8, 16, 32], episodes=6)
    for clf, r in records.items():
        curve = r["extra"]["curve"]
        assert curve["shots"] == [1, 2, 4, 8, 16, 32] and r["selected"]["shots"] == 32
        assert r["selected"]["episode"] == 0
        for name, rows in curve["per_episode"].items():
            assert len(rows) == 6 and all(len(v) == 6 for v in rows)
            np.testing.assert_allclose(curve["mean"][name], [np.mean(v) for v in rows])
            np.testing.assert_allclose(curve["std"][name], [np.std(v, ddof=1) for v in rows])
        # the record's metrics are those of the reported episode
        for name, m in r["metrics"].items():
            assert m["value"] == pytest.approx(curve["per_episode"][name][-1][0], abs=1e-4), (clf, name)
            assert m["ci_low"] <= m["value"] <= m["ci_high"]
        # more labelled examples help: the mean AUROC rises from 1 to 32 shots, and episodes vary less
        assert curve["mean"]["auroc"][-1] > curve["mean"]["auroc"][0] + 0.05, (clf, curve["mean"]["auroc"])
        assert curve["std"]["auroc"][-1] < curve["std"]["auroc"][0], (clf, curve["std"]["auroc"])
        assert [len(s) for s in curve["support_sizes"]] == [6] * 6
        assert curve["support_sizes"][0] == [2] * 6 and curve["support_sizes"][-1] == [64] * 6


def test_episodes_do_not_depend_on_the_rest_of_the_grid(registry_factory, tmp_path):
    data = feature_task("fs-grid", "multiclass", 3, margin=1.0)
    full = run_few_shot(registry_factory, tmp_path / "a", data, ["prototype"], shots=[1, 2, 4])["prototype"]
    only4 = run_few_shot(registry_factory, tmp_path / "b", data, ["prototype"], shots=[4])["prototype"]
    assert only4["extra"]["curve"]["per_episode"]["auroc"][0] == full["extra"]["curve"]["per_episode"]["auroc"][2]
    assert only4["metrics"] == full["metrics"]  # both report episode 0 of n = 4


def test_shots_a_class_cannot_supply_are_skipped(registry_factory, tmp_path):
    data = feature_task("fs-skip", "binary", 2, sizes=(20, 20, 40))  # 10 per class
    r = run_few_shot(registry_factory, tmp_path, data, ["prototype"], shots=[1, 8, 16])["prototype"]
    assert r["extra"]["curve"]["shots"] == [1, 8] and r["extra"]["skipped_shots"] == [16]
    assert r["selected"]["shots"] == 8


def test_multilabel_few_shot_counts_patients(registry_factory, tmp_path):
    data = feature_task("fs-ml", "multilabel", 3, margin=3.0, patients=2)
    records = run_few_shot(registry_factory, tmp_path, data, shots=[1, 4])
    for clf, r in records.items():
        assert r["extra"]["unit"] == "patient"
        assert r["metrics"]["auroc"]["value"] > 0.8, clf
        # patients hold 2 consecutive training images: a drawn patient brings both
        idx = sorted(int(s.split("/")[1]) for s in r["extra"]["reported_support_ids"])
        assert all(i // 2 * 2 in idx and i // 2 * 2 + 1 in idx for i in idx), clf


def test_fewer_than_five_episodes_is_refused(registry_factory, tmp_path):
    data = feature_task("fs-few", "binary", 2)
    cfg = run_config(tmp_path, data, ["few_shot_prototype"], options={"few_shot_prototype": {"episodes": 3}})
    outcome = Runner(registry_factory(data), cfg).run()[0]
    assert outcome.status == "error" and "at least 5 episodes" in outcome.message
