"""Paired comparisons from stored predictions: which differences on the leaderboard are real.

Two models evaluated on the identical test set are compared by a paired bootstrap: the same
resampled cases (whole patients where patient ids exist) are used for both, so what is shared
between them (an easy or a hard case) cancels. For each resample the difference in the metric
is taken; the 95% interval is its 2.5th and 97.5th percentiles, and the two-sided p-value comes
from the bootstrap standard error of the difference (a normal approximation, as DeLong's test is
for AUROC), so that it is not floored at 1/B and a Holm correction over many pairs stays
meaningful. ``holm`` adjusts a family of p-values (Holm 1979, step-down, monotone).

Resampling weights are drawn once per test set (``resampling_weights``) with a seed derived from
the test-set identity, so the leaderboard is a pure function of the records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .metrics import weight_chunks, weighted_metric

COMPARISON_RESAMPLES = 2000
ALPHA = 0.05


def resampling_weights(
    identity: str, n: int, groups: np.ndarray | None, resamples: int = COMPARISON_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """(resamples, n) bootstrap multiplicities for one test set, the same for every model on it
    (memoised: a leaderboard compares many rows on one test set; read-only)."""
    chunks = weight_chunks(n, resamples, (seed, int(identity[:15], 16)), groups, chunk=max(1, resamples))
    return chunks[0] if chunks else np.zeros((0, n))


def metric_draws(task: str, metric: str, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric under each row of ``weights``: one model's bootstrap distribution."""
    return np.asarray(weighted_metric(task, metric, labels, scores, weights), dtype=np.float64)


@dataclass(frozen=True)
class PairedResult:
    """A − B: the difference of the point estimates, its 95% interval and p-values."""

    difference: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float | None = None
    resamples: int = 0

    def significant(self, alpha: float = ALPHA) -> bool:
        """Whether the Holm-adjusted (else the raw) p-value is below ``alpha``."""
        p = self.p_holm if self.p_holm is not None else self.p
        return p < alpha

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready."""
        r = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {
            "difference": r(self.difference),
            "ci_low": r(self.ci_low),
            "ci_high": r(self.ci_high),
            "p": r(self.p),
            "p_holm": r(self.p_holm),
            "resamples": self.resamples,
        }


def paired_difference(point_a: float, point_b: float, draws_a: np.ndarray, draws_b: np.ndarray) -> PairedResult:
    """Compare A and B from their draws under the same resampling weights."""
    d = np.asarray(draws_a, dtype=np.float64) - np.asarray(draws_b, dtype=np.float64)
    d = d[np.isfinite(d)]
    diff = float(point_a - point_b)
    if len(d) < 2:
        return PairedResult(diff, math.nan, math.nan, math.nan, resamples=len(d))
    lo, hi = np.percentile(d, [2.5, 97.5])
    se = float(d.std(ddof=1))
    if se > 0:
        p = math.erfc(abs(diff) / se / math.sqrt(2.0))
    else:  # every resample gives the same difference
        p = 1.0 if diff == 0 else 0.0
    return PairedResult(diff, float(lo), float(hi), min(1.0, p), resamples=len(d))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out.tolist()
