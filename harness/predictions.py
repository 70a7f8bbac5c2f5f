"""Per-sample test predictions as the harness stores them (no torch import: readers stay light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Predictions:
    """Per-sample test predictions: enough to recompute every metric.

    ``ids``, ``labels`` and ``groups`` come from the data set's test split (attached by the
    runner, never by a protocol); ``scores`` is (N, C): softmax probabilities for single-label
    tasks, per-class probabilities for multi-label. ``labels`` is (N,) or (N, C).
    """

    ids: Sequence[str]
    labels: np.ndarray
    scores: np.ndarray
    groups: np.ndarray | None = None
