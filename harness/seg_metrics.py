"""Segmentation metrics per case, from MONAI, with case-level bootstrap intervals.

Why MONAI: it is the metrics library of medical image segmentation (the Medical Segmentation
Decathlon's successors, nnU-Net comparisons and Metrics Reloaded's reference implementations
use or cite it); it computes surface distances in physical spacing, in 2D and 3D, and
documents how empty masks are treated. A case is one image (2D sets) or one whole volume.

Per case and foreground class (``include_background=False``):

- ``dice`` and ``iou``: ``compute_dice`` / ``compute_iou`` with ``ignore_empty=False``: truth and
  prediction both empty gives 1, a prediction on an empty truth (or an empty prediction of a
  present class) 0, so false positives on empty cases count.
- ``nsd``: ``compute_surface_dice`` at the tolerance (mm, or pixels without spacing): MONAI
  gives 0 when exactly one of truth and prediction is empty and NaN when both are.
- ``hd95``: ``compute_hausdorff_distance(percentile=95)``, symmetric, in mm (pixels without
  spacing): undefined (NaN) when the truth or the prediction is empty; lower is better.

NaN values (and infinite distances) leave that case out of the mean; ``segmentation_notes``
counts empty truths and predictions per class. ``evaluate_segmentation`` reports the case mean
of every per-case value with a 95% percentile-bootstrap interval over cases, resampling
whole patients where patient ids are given. monai and torch are imported inside the functions.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from .metrics import DEFAULT_RESAMPLES, MetricValue, weight_chunks

SEG_METRICS = ("dice", "iou", "nsd", "hd95")


def _onehot(mask: np.ndarray, n_classes: int) -> Any:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
    return torch.nn.functional.one_hot(t, n_classes).movedim(-1, 0)[None].to(torch.uint8)


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, n_classes: int, spacing: Sequence[float] | None, tolerance_mm: float
) -> dict[str, np.ndarray]:
    """One case: (n_classes - 1,) arrays of Dice, IoU, NSD and HD95 per foreground class (NaN where
    undefined). ``pred`` and ``truth`` are integer class maps (H, W) or (H, W, S); ``spacing`` is
    millimetres per axis in the same order (``None``: pixel units)."""
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou, compute_surface_dice

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    p, t = _onehot(pred, n_classes), _onehot(truth, n_classes)
    sp = None if spacing is None else [float(s) for s in spacing]
    if sp is not None and len(sp) != pred.ndim:
        raise ValueError(f"spacing {sp} does not match a {pred.ndim}-D case")
    out: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on every empty mask; the notes count them
        out["dice"] = compute_dice(p, t, include_background=False, ignore_empty=False).numpy()[0]
        out["iou"] = compute_iou(p, t, include_background=False, ignore_empty=False).numpy()[0]
        out["nsd"] = compute_surface_dice(
            p, t, [float(tolerance_mm)] * (n_classes - 1), include_background=False, spacing=sp
        ).numpy()[0]
        out["hd95"] = compute_hausdorff_distance(p, t, include_background=False, percentile=95, spacing=sp).numpy()[0]
    return {k: np.where(np.isfinite(v), v, np.nan).astype(np.float64) for k, v in out.items()}


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    count = finite.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(finite, values, 0.0).sum(1) / count, np.nan)


def segmentation_table(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    n_classes: int,
    spacings: Sequence[Sequence[float] | None],
    tolerance_mm: float,
) -> dict[str, np.ndarray]:
    """Per-case values, each (n_cases,): the mean over foreground classes of ``dice``, ``iou``,
    ``nsd``, ``hd95`` (NaN-skipping) and, with several foreground classes, each class's
    ``<metric>_class_<c>`` (c = 1..n_classes-1, the data set's class index)."""
    per = [case_metrics(p, t, n_classes, s, tolerance_mm) for p, t, s in zip(preds, truths, spacings)]
    table: dict[str, np.ndarray] = {}
    for m in SEG_METRICS:
        values = np.stack([c[m] for c in per]) if per else np.zeros((0, n_classes - 1))
        table[m] = _nanmean_rows(values)
        if n_classes > 2:
            for c in range(1, n_classes):
                table[f"{m}_class_{c}"] = values[:, c - 1]
    return table


def evaluate_segmentation(
    table: dict[str, np.ndarray],
    groups: np.ndarray | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    chunk: int = 500,
) -> dict[str, MetricValue]:
    """The case mean of every per-case value (NaN cases skipped) with its 95% percentile-bootstrap
    interval over cases; ``groups`` (one patient id per case) resamples whole patients."""
    n = len(next(iter(table.values()))) if table else 0
    draws: dict[str, list[np.ndarray]] = {k: [] for k in table}
    finite = {k: np.isfinite(v) for k, v in table.items()}
    filled = {k: np.where(finite[k], v, 0.0) for k, v in table.items()}
    for w in weight_chunks(n, resamples, seed, groups, chunk) if n else []:
        for k in table:
            with np.errstate(invalid="ignore", divide="ignore"):
                draws[k].append((w @ filled[k]) / (w @ finite[k].astype(np.float64)))
    out = {}
    for k, v in table.items():
        point = float(np.mean(v[finite[k]])) if finite[k].any() else math.nan
        sample = np.concatenate(draws[k]) if draws[k] else np.array([])
        sample = sample[np.isfinite(sample)]
        lo, hi = np.percentile(sample, [2.5, 97.5]) if len(sample) else (math.nan, math.nan)
        out[k] = MetricValue(point, float(lo), float(hi))
    return out


def segmentation_flags(
    preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], n_classes: int, table: dict[str, np.ndarray]
) -> list[str]:
    """Conditions of a segmentation result: ``all_background_predictions`` (no case predicts any
    foreground), ``non_finite_dice`` (no case has a Dice), ``empty_prediction_cases`` (a case
    predicts nothing of a class its truth holds), ``empty_truth_cases`` (a case's truth lacks a
    class, so its NSD or HD95 is undefined there)."""
    flags = []
    if all(not np.any(p) for p in preds):
        flags.append("all_background_predictions")
    if not np.isfinite(table.get("dice", np.array([]))).any():
        flags.append("non_finite_dice")
    present = [[bool(np.any(t == c)) for c in range(1, n_classes)] for t in truths]
    predicted = [[bool(np.any(p == c)) for c in range(1, n_classes)] for p in preds]
    if any(t and not p for ts, ps in zip(present, predicted) for t, p in zip(ts, ps)):
        flags.append("empty_prediction_cases")
    if any(not t for ts in present for t in ts):
        flags.append("empty_truth_cases")
    return flags


def segmentation_notes(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], n_classes: int) -> dict[str, Any]:
    """Per foreground class, how many cases have an empty truth, an empty prediction, or both."""
    notes: dict[str, Any] = {}
    for c in range(1, n_classes):
        t = [bool(np.any(m == c)) for m in truths]
        p = [bool(np.any(m == c)) for m in preds]
        notes[f"class_{c}"] = {
            "empty_truth": sum(not x for x in t),
            "empty_prediction": sum(not x for x in p),
            "both_empty": sum((not a) and (not b) for a, b in zip(t, p)),
        }
    return notes
