"""Metrics: vectorised weighted forms equal scikit-learn; bootstrap intervals behave and cover."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from medfm.metrics import (MetricValue, bootstrap_weights, degenerate_flags, evaluate, point_metrics,
                           weighted_metrics)

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
    w = np.vstack([rng.integers(0, 4, (6, len(labels))).astype(float),
                   bootstrap_weights(len(labels), 6, rng)])
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
    assert_metrics_equal({k: float(v[0]) for k, v in weighted.items()}, point_metrics("binary", labels[idx],
                                                                                       scores[idx]))


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
