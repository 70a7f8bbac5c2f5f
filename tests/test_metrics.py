"""Metrics: vectorised weighted forms equal scikit-learn; bootstrap intervals behave and cover."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from medfm.metrics import MetricValue, bootstrap_weights, degenerate_flags, evaluate, point_metrics, weighted_metrics

TASKS = ("binary", "multiclass", "ordinal", "multilabel")


def random_task(task: str, n: int = 80, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative-but-noisy scores for ``task``."""
    rng = np.random.default_rng(seed)
    if task == "multilabel":
        c = 4
        labels = rng.integers(0, 2, (n, c))
        labels[0], labels[1] = 1, 0  # every column has both values
        scores = np.clip(0.3 * labels + rng.random((n, c)) * 0.7, 0, 1)
    else:
        c = 2 if task == "binary" else 4
        labels = rng.integers(0, c, n)
        labels[:c] = np.arange(c)
        logits = rng.normal(0, 1, (n, c))
        logits[np.arange(n), labels] += 1.0
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if ties:
        scores = np.round(scores, 1)
    return labels, scores


def assert_metrics_equal(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(expected) <= set(got)
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(value, abs=1e-9), name


# ------------------------------------------------------------------ weighted forms vs scikit-learn
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("task", TASKS)
def test_all_ones_weights_equal_sklearn(task, ties):
    labels, scores = random_task(task, ties=ties)
    weighted = weighted_metrics(task, labels, scores, np.ones((1, len(labels))))
    expected = point_metrics(task, labels, scores)
    assert set(weighted) == set(expected)
    assert_metrics_equal({k: float(v[0]) for k, v in weighted.items()}, expected)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("task", TASKS)
def test_integer_weights_equal_sklearn_on_repeated_sample(task, ties):
    labels, scores = random_task(task, n=50, seed=1, ties=ties)
    rng = np.random.default_rng(2)
    w = np.vstack([rng.integers(0, 4, (6, len(labels))).astype(float), bootstrap_weights(len(labels), 6, rng)])
    weighted = weighted_metrics(task, labels, scores, w)
    for b, row in enumerate(w):
        idx = np.repeat(np.arange(len(labels)), row.astype(int))
        expected = point_metrics(task, labels[idx], scores[idx])
        assert_metrics_equal({k: float(v[b]) for k, v in weighted.items()}, expected)


def test_binary_resample_without_negatives_matches_point_metrics():
    labels, scores = random_task("binary", n=30, seed=3)
    w = (labels == 1).astype(float)[None]  # a resample that drew only positives
    idx = np.flatnonzero(w[0])
    weighted = weighted_metrics("binary", labels, scores, w)
    assert_metrics_equal(
        {k: float(v[0]) for k, v in weighted.items()}, point_metrics("binary", labels[idx], scores[idx])
    )


def test_bootstrap_weights_shapes_and_groups():
    rng = np.random.default_rng(0)
    w = bootstrap_weights(30, 100, rng)
    assert w.shape == (100, 30) and np.all(w.sum(1) == 30) and np.all(w >= 0)
    groups = np.repeat(np.arange(10), 3)[np.random.default_rng(1).permutation(30)]
    wg = bootstrap_weights(30, 100, rng, groups=groups)
    assert wg.shape == (100, 30)
    for g in range(10):  # a patient's images are drawn together
        members = wg[:, groups == g]
        assert np.all(members == members[:, :1])
    assert np.all(wg.sum(1) == 30)  # 10 groups of 3 drawn 10 times


# ------------------------------------------------------------------ intervals
@pytest.mark.parametrize("task", TASKS)
def test_evaluate_interval_contains_point_estimate(task):
    labels, scores = random_task(task, n=200, seed=4)
    result = evaluate(task, labels, scores, resamples=300, seed=0)
    assert set(result) == set(point_metrics(task, labels, scores))
    for name, m in result.items():
        assert isinstance(m, MetricValue)
        assert m.ci_low <= m.value <= m.ci_high, (name, m)
        assert m.ci_high - m.ci_low > 0, name


def test_evaluate_is_seeded():
    labels, scores = random_task("binary", n=100, seed=5)
    a = evaluate("binary", labels, scores, resamples=200, seed=1)
    b = evaluate("binary", labels, scores, resamples=200, seed=1)
    c = evaluate("binary", labels, scores, resamples=200, seed=2)
    assert a == b and a != c
    # chunking does not change the draws
    assert evaluate("binary", labels, scores, resamples=200, seed=1, chunk=37) == a


def test_metric_value_as_dict_maps_nan_to_none():
    assert MetricValue(math.nan, 0.1, math.inf).as_dict() == {"value": None, "ci_low": 0.1, "ci_high": None}


def test_grouped_bootstrap_is_wider_for_duplicated_patients():
    base_labels, base_scores = random_task("binary", n=60, seed=6)
    copies = 5  # each patient imaged 5 times with identical predictions: perfectly correlated
    labels, scores = np.repeat(base_labels, copies), np.repeat(base_scores, copies, axis=0)
    groups = np.repeat(np.arange(60), copies)
    flat = evaluate("binary", labels, scores, resamples=400, seed=0)["auroc"]
    grouped = evaluate("binary", labels, scores, groups=groups, resamples=400, seed=0)["auroc"]
    assert grouped.value == flat.value
    width_flat, width_grouped = flat.ci_high - flat.ci_low, grouped.ci_high - grouped.ci_low
    assert width_grouped >= width_flat
    # treating 300 images as independent understates the uncertainty by about sqrt(5)
    assert width_grouped > 1.5 * width_flat
    # grouped resampling of the duplicated data behaves like resampling the 60 patients themselves
    patients = evaluate("binary", base_labels, base_scores, resamples=400, seed=0)["auroc"]
    assert width_grouped == pytest.approx(patients.ci_high - patients.ci_low, rel=0.25)


def test_bootstrap_interval_coverage():
    """95% intervals cover the true AUROC in about 95% of repeated experiments."""
    shift = 1.0  # positives ~ N(1, 1), negatives ~ N(0, 1): AUROC = Phi(shift / sqrt(2))
    truth = norm.cdf(shift / math.sqrt(2))
    rng = np.random.default_rng(123)
    trials, covered = 200, 0
    for t in range(trials):
        labels = (rng.random(120) < 0.4).astype(int)
        z = rng.normal(0, 1, 120) + shift * labels
        p = 1 / (1 + np.exp(-z))
        auroc = evaluate("binary", labels, np.c_[1 - p, p], resamples=300, seed=t)["auroc"]
        covered += auroc.ci_low <= truth <= auroc.ci_high
    assert 0.88 * trials <= covered <= 0.99 * trials, covered / trials


# ------------------------------------------------------------------ degenerate results
def _flags(task, labels, scores, seed=0):
    return degenerate_flags(task, labels, scores, evaluate(task, labels, scores, resamples=200, seed=seed))


def test_good_classifier_is_not_flagged():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.35 * (2 * labels - 1) + rng.normal(0, 0.15, 200), 0.01, 0.99)
    assert _flags("binary", labels, np.c_[1 - p, p]) == []
    ml_labels, ml_scores = random_task("multilabel", n=200, seed=8)
    ml_scores = np.clip(0.8 * ml_labels + 0.2 * ml_scores, 0, 1)
    assert _flags("multilabel", ml_labels, ml_scores) == []


def test_collapsed_predictions_are_flagged():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 90)
    scores = np.tile([0.2, 0.7, 0.1], (90, 1)) + rng.normal(0, 0.01, (90, 3))  # always class 1
    assert "collapsed_predictions" in _flags("multiclass", labels, scores)
    ml_labels = rng.integers(0, 2, (50, 3))
    assert "collapsed_predictions" in _flags("multilabel", ml_labels, np.full((50, 3), 0.2))


def test_chance_auroc_is_flagged():
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 2, 150)
    p = rng.random(150)  # independent of the labels
    flags = _flags("binary", labels, np.c_[1 - p, p])
    assert "chance_auroc" in flags and "collapsed_predictions" not in flags


def test_non_finite_scores_are_flagged():
    labels, scores = random_task("binary", n=50, seed=11)
    scores = scores.copy()
    scores[3] = np.nan
    metrics = {"auroc": MetricValue(0.9, 0.8, 0.95)}
    assert "non_finite_scores" in degenerate_flags("binary", labels, scores, metrics)


# ------------------------------------------------------------------ per-class AUROC
@pytest.mark.parametrize("task", ["multiclass", "ordinal", "multilabel"])
def test_per_class_auroc_equals_sklearn_average_none(task):
    from sklearn.metrics import roc_auc_score

    from medfm.metrics import class_auroc_name

    labels, scores = random_task(task, n=120, seed=12)
    y = labels if task == "multilabel" else np.eye(scores.shape[1], dtype=int)[labels]
    expected = roc_auc_score(y, scores, average=None)  # scikit-learn's own one-vs-rest per class
    got = point_metrics(task, labels, scores)
    for c, value in enumerate(expected):
        assert got[class_auroc_name(c)] == pytest.approx(value, abs=1e-12)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, scores, average="macro"), abs=1e-12)
    # and every per-class value has a bootstrap interval around it
    result = evaluate(task, labels, scores, resamples=200, seed=0)
    for c in range(len(expected)):
        m = result[class_auroc_name(c)]
        assert m.ci_low <= m.value <= m.ci_high


def test_binary_has_no_per_class_auroc():
    labels, scores = random_task("binary", n=50, seed=13)
    assert not [k for k in point_metrics("binary", labels, scores) if k.startswith("auroc_class_")]


# ------------------------------------------------------------------ one metric for many heads
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("task", TASKS)
def test_metric_per_head_equals_sklearn_for_each_head(task, ties):
    from medfm.metrics import metric_per_head

    labels, _ = random_task(task, n=70, seed=14)
    heads = np.stack([random_task(task, n=70, seed=20 + h, ties=ties)[1] for h in range(5)])
    heads[2] = np.round(heads[2], 0)  # a head with massive ties
    for name in point_metrics(task, labels, heads[0]):
        got = metric_per_head(task, name, labels, heads)
        expected = [point_metrics(task, labels, heads[h])[name] for h in range(len(heads))]
        np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("pairwise", [True, False])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_both_auroc_paths_equal_sklearn(task, pairwise, monkeypatch):
    """Per-head AUROC counts positive-negative pairs on small sets and ranks on large ones;
    either way it is scikit-learn's, ties included."""
    from medfm import metrics

    monkeypatch.setattr(metrics, "PAIRWISE_AUROC_MAX", 1 << 40 if pairwise else 0)
    labels, _ = random_task(task, n=90, seed=31)
    heads = np.stack([random_task(task, n=90, seed=40 + h, ties=True)[1] for h in range(4)])
    heads[1] = np.round(heads[1], 1)
    got = metrics.metric_per_head(task, "auroc", labels, heads)
    expected = [point_metrics(task, labels, heads[h])["auroc"] for h in range(len(heads))]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_metric_per_head_gives_nan_for_non_finite_heads():
    from medfm.metrics import metric_per_head

    labels, scores = random_task("multiclass", n=40, seed=15)
    heads = np.stack([scores, scores.copy()])
    heads[1, 3, 0] = np.nan
    for name in ("auroc", "accuracy", "kappa", "auprc"):
        got = metric_per_head("multiclass", name, labels, heads)
        assert np.isfinite(got[0]) and np.isnan(got[1]), name


def test_worse_than_chance_auroc_is_flagged():
    rng = np.random.default_rng(16)
    labels = rng.integers(0, 2, 200)
    p = np.clip(0.5 - 0.3 * (2 * labels - 1) + rng.normal(0, 0.15, 200), 0.01, 0.99)  # inverted
    metrics = evaluate("binary", labels, np.c_[1 - p, p], resamples=200, seed=0)
    assert metrics["auroc"].ci_high < 0.5
    assert "chance_auroc" in degenerate_flags("binary", labels, np.c_[1 - p, p], metrics)


def test_grouped_bootstrap_covers_at_nominal_rate_with_correlated_patients():
    """With strongly correlated images per patient, patient resampling keeps ~95% coverage of the
    true AUROC; resampling images as if independent falls well short of it."""
    shift, copies, patients = 1.0, 4, 40
    truth = norm.cdf(shift / math.sqrt(2))  # patient-level scores: positives N(1, 1), negatives N(0, 1)
    rng = np.random.default_rng(321)
    trials, grouped_cover, flat_cover = 150, 0, 0
    for t in range(trials):
        y = (rng.random(patients) < 0.5).astype(int)
        y[:2] = [0, 1]
        z = rng.normal(0, 1, patients) + shift * y
        labels = np.repeat(y, copies)
        score = np.repeat(z, copies) + rng.normal(0, 0.05, patients * copies)  # near-duplicates
        p = 1 / (1 + np.exp(-score))
        groups = np.repeat(np.arange(patients), copies)
        g = evaluate("binary", labels, np.c_[1 - p, p], groups=groups, resamples=300, seed=t)["auroc"]
        f = evaluate("binary", labels, np.c_[1 - p, p], resamples=300, seed=t)["auroc"]
        grouped_cover += g.ci_low <= truth <= g.ci_high
        flat_cover += f.ci_low <= truth <= f.ci_high
    assert 0.87 * trials <= grouped_cover <= 0.995 * trials, grouped_cover / trials
    assert flat_cover < grouped_cover - 0.1 * trials, (flat_cover / trials, grouped_cover / trials)


@pytest.mark.parametrize("pairwise", [True, False])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_both_weighted_auroc_paths_equal_sklearn_on_resamples(task, pairwise, monkeypatch):
    """The bootstrap's AUROC uses the pair matrix on small test sets and sorted score levels on
    large ones; both give scikit-learn's AUROC of the resampled set, ties included."""
    from medfm import metrics

    monkeypatch.setattr(metrics, "PAIRWISE_WEIGHTED_AUROC_MAX", 1 << 40 if pairwise else 0)
    labels, scores = random_task(task, n=60, seed=7, ties=True)
    w = bootstrap_weights(len(labels), 5, np.random.default_rng(3))
    got = metrics.weighted_metrics(task, labels, scores, w)["auroc"]
    for b, row in enumerate(w):
        idx = np.repeat(np.arange(len(labels)), row.astype(int))
        assert got[b] == pytest.approx(point_metrics(task, labels[idx], scores[idx])["auroc"], abs=1e-12)


def test_memoised_weights_equal_fresh_draws_and_cannot_be_changed():
    from medfm.metrics import bootstrap_weights, weight_chunks

    groups = np.repeat(np.arange(40), 3)
    for seed, g in [(0, None), (7, groups), ((3, 12345), None)]:
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        fresh = [bootstrap_weights(120, b, rng, g) for b in (250, 250, 100)]
        first = weight_chunks(120, 600, seed, g, chunk=250)
        again = weight_chunks(120, 600, seed, g, chunk=250)
        assert again is first  # drawn once
        assert all(np.array_equal(a, b) for a, b in zip(first, fresh)) and len(first) == 3
        with pytest.raises(ValueError):
            first[0][0, 0] = 99.0
    # other patients, seed or count: other weights
    assert weight_chunks(120, 600, 7, np.arange(120) // 2)[0] is not weight_chunks(120, 600, 7, groups)[0]
