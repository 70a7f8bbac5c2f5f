"""Metrics from stored predictions, with bootstrap confidence intervals.

Point estimates come from scikit-learn. The bootstrap needs each metric thousands of times,
which scikit-learn cannot do in one call, so each metric also has a weighted, vectorised
form: a bootstrap resample is a vector of sample multiplicities, and all resamples are
computed at once as matrix operations. Tests check that every vectorised form equals
scikit-learn's value on the full sample and on resamples. Where patient ids exist the
bootstrap resamples patients, not images, because images of one patient are correlated.

Metrics: AUROC (binary; macro one-vs-rest for multi-class and ordinal; macro over labels for
multi-label) and, except for binary tasks, each class's AUROC (``auroc_class_<i>``, i in the
data set's class order); AUPRC; accuracy, balanced accuracy, macro-F1; Cohen's kappa,
quadratic for ordinal tasks. ``metric_per_head`` computes one metric for many candidates'
predictions at once, for model selection.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

DEFAULT_RESAMPLES = 1000
CLASS_AUROC_PREFIX = "auroc_class_"


def class_auroc_name(index: int) -> str:
    """Metric name of the one-vs-rest AUROC of class ``index`` (the data set's class order).

    Multi-class, ordinal and multi-label tasks report one per class next to the macro
    ``auroc``; binary tasks do not (both columns would repeat ``auroc``).
    """
    return f"{CLASS_AUROC_PREFIX}{index}"


# ---------------------------------------------------------------- scikit-learn point estimates
def _sk_auroc_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        if 0 < y[:, c].sum() < len(y):
            out[c] = skm.roc_auc_score(y[:, c], s[:, c])
    return out


def _sk_auprc_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        if y[:, c].sum() > 0:
            out[c] = skm.average_precision_score(y[:, c], s[:, c])
    return out


def point_metrics(task: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric that applies to ``task``, computed by scikit-learn on the full sample.

    ``scores`` is (N, C): class probabilities (softmax) or, for multi-label, per-class
    probabilities. Binary tasks use column 1 as the positive class.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    n_classes = scores.shape[1]
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "multilabel":
            y = labels.astype(int)
            auc = _sk_auroc_columns(y, scores)
            out["auroc"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else math.nan
            out.update({class_auroc_name(c): float(a) for c, a in enumerate(auc)})
            ap = _sk_auprc_columns(y, scores)
            out["auprc"] = float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan
            out["f1_macro"] = float(skm.f1_score(y, (scores >= 0.5).astype(int), average="macro", zero_division=0))
            return out
        y = labels.astype(int).ravel()
        pred = scores.argmax(1)
        onehot = np.eye(n_classes, dtype=int)[y]
        auc = _sk_auroc_columns(onehot, scores)
        if task == "binary":
            out["auroc"] = float(auc[1])
            out["auprc"] = float(skm.average_precision_score(y, scores[:, 1])) if 0 < y.sum() < len(y) else math.nan
        else:
            out["auroc"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else math.nan
            out.update({class_auroc_name(c): float(a) for c, a in enumerate(auc)})
            ap = _sk_auprc_columns(onehot, scores)
            out["auprc"] = float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
        out["f1_macro"] = float(skm.f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))
        out["kappa"] = float(
            skm.cohen_kappa_score(
                y, pred, labels=list(range(n_classes)), weights="quadratic" if task == "ordinal" else None
            )
        )
    return out


# ---------------------------------------------------------------- weighted, vectorised forms
def _level_sums(sorted_w: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(sorted_w, starts, axis=1)


PAIRWISE_WEIGHTED_AUROC_MAX = 1 << 18  # positives x negatives up to which the pair matrix is used


def weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of binary ``y`` vs scores ``s`` under each row of weights ``w`` (B, N); ties count half.

    With few positive-negative pairs (test sets of a few hundred cases) the AUROC of every row is a
    bilinear form ``w_pos K w_neg`` in the pair matrix K (1 where the positive scores higher, 0.5 on
    ties), one matrix product for all rows: about 7x faster than sorting and scattering each row,
    and the same numbers. Larger sets sort once and sum weights per score level.
    """
    is_pos = np.asarray(y) > 0.5
    n_pos = int(is_pos.sum())
    if 0 < n_pos < len(s) and n_pos * (len(s) - n_pos) <= PAIRWISE_WEIGHTED_AUROC_MAX:
        d = s[is_pos][:, None] - s[~is_pos][None, :]
        pairs = (d > 0) + 0.5 * (d == 0)
        w_pos, w_neg = w[:, is_pos], w[:, ~is_pos]
        num = np.einsum("bj,bj->b", w_pos @ pairs, w_neg)
        den = w_pos.sum(1) * w_neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    pos = _level_sums(w[:, order] * y[order], starts)
    neg = _level_sums(w[:, order] * (1 - y[order]), starts)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_average_precision(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise definition) under each row of weights."""
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    tp = np.cumsum(_level_sums(w[:, order] * y[order], starts), axis=1)
    fp = np.cumsum(_level_sums(w[:, order] * (1 - y[order]), starts), axis=1)
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        recall_step = np.diff(np.concatenate([np.zeros_like(total), tp], axis=1), axis=1) / np.where(
            total > 0, total, 1
        )
        ap = (recall_step * precision).sum(1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def _confusions(y: np.ndarray, pred: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    idx = y * n_classes + pred
    onehot = np.zeros((len(y), n_classes * n_classes))
    onehot[np.arange(len(y)), idx] = 1.0
    return (w @ onehot).reshape(len(w), n_classes, n_classes)


def _from_confusion(conf: np.ndarray, ordinal: bool) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        total = conf.sum((1, 2))
        diag = np.diagonal(conf, axis1=1, axis2=2)
        support, predicted = conf.sum(2), conf.sum(1)
        recall = np.where(support > 0, diag / np.where(support > 0, support, 1), np.nan)
        balanced = np.nanmean(recall, axis=1)
        f1_den = support + predicted
        f1 = np.where(f1_den > 0, 2 * diag / np.where(f1_den > 0, f1_den, 1), 0.0)
        c = conf.shape[1]
        i, j = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
        weights = ((i - j) ** 2).astype(float) if ordinal else (i != j).astype(float)
        expected = support[:, :, None] * predicted[:, None, :] / np.where(total > 0, total, 1)[:, None, None]
        num = (weights * conf).sum((1, 2))
        den = (weights * expected).sum((1, 2))
        kappa = np.where(den > 0, 1 - num / np.where(den > 0, den, 1), np.nan)
    return {"accuracy": diag.sum(1) / total, "balanced_accuracy": balanced, "f1_macro": f1.mean(1), "kappa": kappa}


def weighted_metrics(task: str, labels: np.ndarray, scores: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``task`` for each row of weights ``w`` (B, N), vectorised."""
    scores = np.asarray(scores, dtype=np.float64)
    n_classes = scores.shape[1]
    if task == "multilabel":
        y = np.asarray(labels).astype(float)
        auc = np.stack([weighted_auroc(y[:, c], scores[:, c], w) for c in range(n_classes)], 1)
        ap = np.stack([weighted_average_precision(y[:, c], scores[:, c], w) for c in range(n_classes)], 1)
        pred = (scores >= 0.5).astype(float)
        tp = w @ (y * pred)
        f1_den = w @ y + w @ pred
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(f1_den > 0, 2 * tp / np.where(f1_den > 0, f1_den, 1), 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {
                "auroc": np.nanmean(auc, 1),
                **{class_auroc_name(c): auc[:, c] for c in range(n_classes)},
                "auprc": np.nanmean(ap, 1),
                "f1_macro": f1.mean(1),
            }
    y = np.asarray(labels).astype(int).ravel()
    out: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if task == "binary":
            yb = (y == 1).astype(float)
            out["auroc"] = weighted_auroc(yb, scores[:, 1], w)
            ap = weighted_average_precision(yb, scores[:, 1], w)
            out["auprc"] = np.where(w @ (1 - yb) > 0, ap, np.nan)  # as scikit-learn: undefined without negatives
        else:
            onehot = np.eye(n_classes)[y]
            auc = np.stack([weighted_auroc(onehot[:, c], scores[:, c], w) for c in range(n_classes)], 1)
            ap = np.stack([weighted_average_precision(onehot[:, c], scores[:, c], w) for c in range(n_classes)], 1)
            out["auroc"], out["auprc"] = np.nanmean(auc, 1), np.nanmean(ap, 1)
            out.update({class_auroc_name(c): auc[:, c] for c in range(n_classes)})
        out.update(_from_confusion(_confusions(y, scores.argmax(1), w, n_classes), ordinal=task == "ordinal"))
    return out


def weighted_metric(task: str, metric: str, labels: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One metric of ``task`` for each row of weights ``w`` (B, N): what ``weighted_metrics`` gives
    for ``metric``, computing only that metric (the paired comparisons need just the primary one).
    For segmentation, ``scores`` is the per-case metric table (``case_table_predictions``) and the
    result the weighted case mean, cases without a value skipped."""
    scores = np.asarray(scores, dtype=np.float64)
    if task == "segmentation":
        from .seg_predictions import segmentation_column_index

        v = scores[:, segmentation_column_index(metric, scores.shape[1])]
        finite = np.isfinite(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ np.where(finite, v, 0.0)) / (w @ finite.astype(np.float64))
    c = scores.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if metric in ("auroc", "auprc") or metric.startswith(CLASS_AUROC_PREFIX):
            curve = weighted_auroc if metric != "auprc" else weighted_average_precision
            if task == "binary":
                yb = (np.asarray(labels).astype(int).ravel() == 1).astype(float)
                out = curve(yb, scores[:, 1], w)
                return out if metric != "auprc" else np.where(w @ (1 - yb) > 0, out, np.nan)
            y = (
                np.asarray(labels).astype(float)
                if task == "multilabel"
                else np.eye(c)[np.asarray(labels).astype(int).ravel()]
            )
            if metric.startswith(CLASS_AUROC_PREFIX):
                k = int(metric[len(CLASS_AUROC_PREFIX) :])
                return curve(y[:, k], scores[:, k], w)
            return np.nanmean(np.stack([curve(y[:, k], scores[:, k], w) for k in range(c)], 1), 1)
        if task != "multilabel" and metric in ("accuracy", "balanced_accuracy", "f1_macro", "kappa"):
            y = np.asarray(labels).astype(int).ravel()
            return _from_confusion(_confusions(y, scores.argmax(1), w, c), ordinal=task == "ordinal")[metric]
    return weighted_metrics(task, labels, scores, w)[metric]


# ---------------------------------------------------------------- one metric for many score sets
PAIRWISE_AUROC_MAX = 1 << 20  # heads x positives x negatives up to which pairs are counted directly


def _rank_auroc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC of binary ``y`` (N,) for each row of scores ``s`` (H, N): the Mann-Whitney U statistic
    (ties count half, as in scikit-learn), from the positive-negative pairs directly when there are
    few (about 10x faster than ranking on a validation split of a hundred samples), else from
    mid-ranks."""
    pos = float(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return np.full(s.shape[0], np.nan)
    is_pos = y.astype(bool)
    if s.shape[0] * pos * neg <= PAIRWISE_AUROC_MAX:  # small sets (validation splits): count the pairs
        diff = s[:, is_pos][:, :, None] - s[:, ~is_pos][:, None, :]
        u = (diff > 0).sum((1, 2)) + 0.5 * (diff == 0).sum((1, 2))
    else:
        ranks = rankdata(s, axis=1)  # ties get the average rank, as scikit-learn counts them half
        u = ranks[:, is_pos].sum(1) - pos * (pos + 1) / 2
    out = u / (pos * neg)
    return np.where(np.isfinite(s).all(1), out, np.nan)


def metric_per_head(task: str, metric: str, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``metric`` on the full sample for each of H score sets ``scores`` (H, N, C), vectorised.

    Used for model selection over many candidates (a grid of linear heads, k values): one
    call instead of H. AUROC uses mid-ranks and confusion-based metrics one bincount; other
    metrics fall back to ``weighted_metrics`` head by head. Equal to ``point_metrics`` (tested).
    """
    scores = np.asarray(scores, dtype=np.float64)
    h, n, c = scores.shape
    finite = np.isfinite(scores).all((1, 2))
    safe = np.where(finite[:, None, None], scores, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if metric == "auroc" or metric.startswith(CLASS_AUROC_PREFIX):
            if task == "binary":
                out = _rank_auroc((np.asarray(labels).ravel() == 1).astype(float), safe[:, :, 1])
            else:
                y = (
                    np.asarray(labels).astype(float)
                    if task == "multilabel"
                    else np.eye(c)[np.asarray(labels).astype(int).ravel()]
                )
                if metric == "auroc":
                    out = np.nanmean(np.stack([_rank_auroc(y[:, k], safe[:, :, k]) for k in range(c)], 1), 1)
                else:
                    k = int(metric[len(CLASS_AUROC_PREFIX) :])
                    out = _rank_auroc(y[:, k], safe[:, :, k])
        elif task != "multilabel" and metric in ("accuracy", "balanced_accuracy", "f1_macro", "kappa"):
            y = np.asarray(labels).astype(int).ravel()
            pred = safe.argmax(2)  # (H, N)
            flat = (np.arange(h)[:, None] * c * c + y[None, :] * c + pred).ravel()
            conf = np.bincount(flat, minlength=h * c * c).reshape(h, c, c).astype(float)
            out = _from_confusion(conf, ordinal=task == "ordinal")[metric]
        else:
            ones = np.ones((1, n))
            out = np.array([weighted_metrics(task, labels, safe[i], ones)[metric][0] for i in range(h)])
    return np.where(finite, out, np.nan)


# ---------------------------------------------------------------- bootstrap
def bootstrap_weights(n: int, resamples: int, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
    """(resamples, n) multiplicities: samples drawn with replacement, or whole groups if given."""
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g = inverse.max() + 1
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=resamples).astype(np.float64)
    return counts[:, inverse]


WEIGHT_CACHE_BYTES = 256 << 20  # memoised resampling weights, all test sets together
_WEIGHT_CACHE_ONE = 32 << 20  # larger matrices (test sets of tens of thousands) are drawn each time
_weight_cache: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
_weight_lock = threading.Lock()


def _groups_key(groups: np.ndarray | None) -> str | None:
    if groups is None:
        return None
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    return hashlib.sha256(np.ascontiguousarray(inverse, dtype=np.int64).tobytes()).hexdigest()


def weight_chunks(
    n: int, resamples: int, seed: int | Sequence[int], groups: np.ndarray | None = None, chunk: int = 250
) -> list[np.ndarray]:
    """The bootstrap multiplicities ``bootstrap_weights`` draws from ``default_rng(seed)``, ``chunk``
    rows at a time, in order: exactly the arrays a fresh draw gives, memoised (read-only).

    Every record of a test set is scored with the same seed, resample count and patients, so
    a scan of thousands of records (or the paired comparisons of a leaderboard) draws each test
    set's weights once instead of once per record; drawing them is a third of a record's cost."""
    key = (n, resamples, tuple(seed) if isinstance(seed, (list, tuple)) else seed, _groups_key(groups), chunk)
    with _weight_lock:
        got = _weight_cache.get(key)
        if got is not None:
            _weight_cache.move_to_end(key)
            return got
    rng = np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else seed)
    out, done = [], 0
    while done < resamples:
        b = min(chunk, resamples - done)
        w = bootstrap_weights(n, b, rng, groups)
        w.flags.writeable = False
        out.append(w)
        done += b
    size = sum(w.nbytes for w in out)
    if size <= _WEIGHT_CACHE_ONE:
        with _weight_lock:
            _weight_cache[key] = out
            total = sum(a.nbytes for ws in _weight_cache.values() for a in ws)
            while total > WEIGHT_CACHE_BYTES and len(_weight_cache) > 1:
                _, dropped = _weight_cache.popitem(last=False)
                total -= sum(a.nbytes for a in dropped)
    return out


@dataclass(frozen=True)
class MetricValue:
    """A point estimate with its 95% percentile-bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready, with NaN as ``None``."""
        f = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {"value": f(self.value), "ci_low": f(self.ci_low), "ci_high": f(self.ci_high)}


def evaluate(
    task: str,
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    chunk: int = 250,
) -> dict[str, MetricValue]:
    """All metrics of ``task`` with 95% bootstrap CIs (patients resampled when ``groups`` is given)."""
    points = point_metrics(task, labels, scores)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in points}
    for w in weight_chunks(len(labels), resamples, seed, groups, chunk):
        for k, v in weighted_metrics(task, labels, scores, w).items():
            if k in draws:
                draws[k].append(v)
    out = {}
    for k, point in points.items():
        sample = np.concatenate(draws[k]) if draws[k] else np.array([])
        sample = sample[np.isfinite(sample)]
        lo, hi = np.percentile(sample, [2.5, 97.5]) if len(sample) else (math.nan, math.nan)
        out[k] = MetricValue(point, float(lo), float(hi))
    return out


# ---------------------------------------------------------------- guards
def degenerate_flags(task: str, labels: np.ndarray, scores: np.ndarray, metrics: dict[str, MetricValue]) -> list[str]:
    """Reasons not to rank a result as if it were fine (empty when it is fine).

    ``non_finite_scores``: NaN/inf scores; ``collapsed_predictions``: every test sample gets
    the same predicted class (the same label set for multi-label); ``chance_auroc``: the AUROC
    interval contains 0.5 or lies entirely below it. Protocols add their own (``nan_loss``,
    ``non_finite_features``).
    """
    flags = []
    scores = np.asarray(scores)
    if not np.isfinite(scores).all():
        flags.append("non_finite_scores")
    if task == "multilabel":
        rates = (scores >= 0.5).mean(0)
        if np.all((rates == 0) | (rates == 1)) and len(np.unique(scores.round(6), axis=0)) <= 1:
            flags.append("collapsed_predictions")
    elif len(np.unique(scores.argmax(1))) <= 1:
        flags.append("collapsed_predictions")
    auc = metrics.get("auroc")
    # the interval contains 0.5, or lies below it: not distinguishable from (or worse than) chance
    if auc is not None and math.isfinite(auc.ci_low) and auc.ci_low <= 0.5:
        flags.append("chance_auroc")
    return flags
