"""Hyper-parameter selection on validation: the best candidate, ties to the simplest, never NaN."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.protocols import best_index, validation_scores


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5, 0.7, 0.7, 0.1], 1),  # a tie goes to the earliest (the simplest candidate)
        ([0.9, 0.9, 0.9], 0),
        ([0.2, 0.3, 0.8], 2),
        ([-np.inf, 0.6, -np.inf, 0.6], 1),
        ([0.61, 0.6100000000000001], 1),  # a real difference, however small, is not a tie
    ],
)
def test_best_index_breaks_ties_towards_the_first_candidate(values, expected):
    assert best_index(values) == expected
    assert best_index(np.asarray(values)) == expected


def test_undefined_or_non_finite_candidates_are_never_selected():
    labels = np.array([0, 1, 0, 1, 1, 0])
    good = np.stack([1 - labels * 0.8 - 0.1, labels * 0.8 + 0.1], 1)  # separates the classes
    constant = np.full((6, 2), 0.5)  # AUROC 0.5
    broken = good.copy()
    broken[2, 0] = np.nan
    values = validation_scores("binary", "auroc", labels, np.stack([broken, constant, good]))
    assert values[0] == -np.inf and values[1] == pytest.approx(0.5) and values[2] == pytest.approx(1.0)
    assert best_index(values) == 2
    # one validation class only: AUROC is undefined for every candidate, and the first is kept
    single = validation_scores("binary", "auroc", np.zeros(6, int), np.stack([good, constant]))
    assert np.all(single == -np.inf) and best_index(single) == 0
