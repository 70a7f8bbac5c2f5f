"""Model selection helpers for protocols: score many candidates on validation at once."""

from __future__ import annotations

import numpy as np

from .metrics import weighted_metrics


def validation_score(task: str, metric: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """The data set's primary metric on validation predictions (NaN-safe: NaN becomes -inf)."""
    value = float(weighted_metrics(task, labels, scores, np.ones((1, len(labels))))[metric][0])
    return value if np.isfinite(value) else -np.inf


def one_hot_targets(task: str, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) float targets: one-hot for single-label tasks, the labels themselves for multi-label."""
    labels = np.asarray(labels)
    if task == "multilabel":
        return labels.astype(np.float32)
    return np.eye(n_classes, dtype=np.float32)[labels.astype(int).ravel()]
