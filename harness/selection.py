"""Model selection helpers for protocols: score many candidates on validation at once."""

from __future__ import annotations

import numpy as np

from .metrics import metric_per_head, weighted_metrics


def validation_score(task: str, metric: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """The data set's primary metric on validation predictions (NaN-safe: NaN becomes -inf)."""
    value = float(weighted_metrics(task, labels, scores, np.ones((1, len(labels))))[metric][0])
    return value if np.isfinite(value) else -np.inf


def validation_scores(task: str, metric: str, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``validation_score`` for each of H candidates' predictions ``scores`` (H, N, C), in one call.

    Candidates whose metric is undefined or whose scores are not finite get -inf, so they
    are never selected over a finite one.
    """
    values = metric_per_head(task, metric, labels, scores)
    return np.where(np.isfinite(values), values, -np.inf)


def best_index(values: np.ndarray | list[float]) -> int:
    """Index of the best candidate; ties go to the earliest (candidates are listed simplest first)."""
    values = np.asarray(values, dtype=np.float64)
    return int(np.flatnonzero(values == values.max())[0])


def one_hot_targets(task: str, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) float targets: one-hot for single-label tasks, the labels themselves for multi-label."""
    labels = np.asarray(labels)
    if task == "multilabel":
        return labels.astype(np.float32)
    return np.eye(n_classes, dtype=np.float32)[labels.astype(int).ravel()]
