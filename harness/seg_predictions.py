"""Segmentation predictions: checked against the test split, stored compactly, scored per case.

A segmentation protocol returns one predicted class map per test image id, at the size of
that image's mask. ``attach_masks`` checks them (every id once, each map the size of its
mask, classes in range) and pairs them with the split's own masks, cases and spacing: the
truth comes from the data set, never from the protocol. ``write_segmentation_predictions``
stores predicted and true maps, flattened into two compressed uint8 (or uint16) arrays with
the ids, cases, patients, spacing and shapes, so ``medfm validate`` recomputes every metric
from the file alone. A case is an image (2D sets) or a volume: the slices of a case are
stacked in their split order and scored whole (``case_arrays``).
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .io import atomic_path, sha256_bytes, sha256_json
from .predictions import Predictions

SEGMENTATION_ARRAYS = ("ids", "cases", "groups", "spacing", "shapes", "pred", "truth")
MAX_UNCOMPRESSED = 4 << 30
IDENTITY_VERSION = 1
#: Conditions that make a segmentation result unfit to rank (record flags); the others (a case
#: with an empty prediction or truth for some class) are counted in ``segmentation.notes``.
DEGENERATE_SEGMENTATION = ("all_background_predictions", "non_finite_dice")


@dataclass
class SegmentationPredictions:
    """Predicted and true class maps of every test image, in the test split's order."""

    ids: list[str]
    pred: list[np.ndarray]
    truth: list[np.ndarray]
    cases: list[str]
    groups: np.ndarray | None = None
    spacing: np.ndarray | None = None

    @property
    def volumes(self) -> bool:
        """Whether cases are volumes (several slices, or slice spacing given)."""
        return len(set(self.cases)) < len(self.cases) or (self.spacing is not None and self.spacing.shape[1] == 3)


@dataclass
class CaseArrays:
    """The scoring unit: one class map per case (an image, or a stacked volume (H, W, S))."""

    ids: list[str]
    pred: list[np.ndarray]
    truth: list[np.ndarray]
    spacing: list[tuple[float, ...] | None]
    groups: np.ndarray | None


class SegmentationOutputError(ValueError):
    """A segmentation protocol returned masks the harness cannot score."""


def _examples(items: Sequence[Any], limit: int = 3) -> str:
    shown = ", ".join(repr(str(i)) for i in list(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def truth_masks(split: Any) -> list[np.ndarray]:
    """The split's masks as integer arrays (read once, in order)."""
    if split.masks is None:
        raise SegmentationOutputError(f"split {split.name!r} has no masks; it is not a segmentation split")
    out = []
    for i in range(len(split)):
        m = np.asarray(split.masks[i])
        if m.ndim == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        if m.ndim != 2 or m.dtype.kind not in "iub":
            raise SegmentationOutputError(
                f"split {split.name!r}: mask {i} must be an integer (H, W) class map, not {m.dtype} {m.shape}"
            )
        out.append(m)
    return out


def attach_masks(
    protocol: str, split: Any, output: Any, n_classes: int, truth: list[np.ndarray] | None = None
) -> SegmentationPredictions:
    """The protocol's masks, checked and put in the split's order, with the split's truth."""
    from .context import ProtocolOutput

    where = f"protocol {protocol!r}"
    if not isinstance(output, ProtocolOutput):
        raise SegmentationOutputError(f"{where} returned {type(output).__name__}, not ProtocolOutput")
    if output.masks is None:
        raise SegmentationOutputError(f"{where} returned no masks; a segmentation protocol returns one per test id")
    ids = [str(i) for i in output.ids]
    masks = list(output.masks)
    if len(masks) != len(ids):
        raise SegmentationOutputError(f"{where} returned {len(masks)} masks for {len(ids)} ids")
    repeated = [i for i, c in Counter(ids).items() if c > 1]
    if repeated:
        raise SegmentationOutputError(f"{where} returned a mask for the same test image twice: {_examples(repeated)}")
    expected = [str(i) for i in split.ids]
    position = {sid: k for k, sid in enumerate(ids)}
    invented = [i for i in ids if i not in set(expected)]
    if invented:
        raise SegmentationOutputError(f"{where} returned masks for ids not in the test split: {_examples(invented)}")
    missing = [i for i in expected if i not in position]
    if missing:
        raise SegmentationOutputError(
            f"{where} returned masks for {len(ids)} of the {len(expected)} test images (missing: {_examples(missing)})"
        )
    truth = truth if truth is not None else truth_masks(split)
    ordered = []
    for k, sid in enumerate(expected):
        m = np.asarray(masks[position[sid]])
        if m.shape != truth[k].shape:
            raise SegmentationOutputError(
                f"{where} returned a mask of shape {m.shape} for {sid!r}, whose mask is {truth[k].shape}"
            )
        if m.dtype.kind not in "iub" or (m.size and (m.min() < 0 or m.max() >= n_classes)):
            raise SegmentationOutputError(
                f"{where} returned a mask for {sid!r} that is not class indices 0..{n_classes - 1}"
            )
        ordered.append(m.astype(np.uint8 if n_classes <= 256 else np.uint16))
    cases = list(split.cases) if split.cases is not None else expected
    return SegmentationPredictions(
        ids=expected,
        pred=ordered,
        truth=[t.astype(ordered[0].dtype) for t in truth],
        cases=[str(c) for c in cases],
        groups=None if split.groups is None else np.asarray(split.groups),
        spacing=None if split.spacing is None else np.asarray(split.spacing, dtype=np.float64),
    )


# ------------------------------------------------------------------ identity
def segmentation_identity(
    ids: Sequence[str],
    truth: Sequence[np.ndarray],
    cases: Sequence[str],
    groups: np.ndarray | None,
    spacing: np.ndarray | None,
    split_file_sha256: str | None = None,
) -> str:
    """sha256 of a segmentation test set: ordered ids, true masks, cases, patients, spacing."""
    h = __import__("hashlib").sha256()
    for m in truth:
        m = np.ascontiguousarray(m, dtype=np.uint16)
        h.update(str(m.shape).encode())
        h.update(m.tobytes())
    payload = {
        "version": IDENTITY_VERSION,
        "task": "segmentation",
        "ids": [str(i) for i in ids],
        "masks": h.hexdigest(),
        "cases": [str(c) for c in cases],
        "groups": None if groups is None else [str(g) for g in np.asarray(groups).tolist()],
        "spacing": None if spacing is None else np.round(np.asarray(spacing, dtype=np.float64), 6).tolist(),
        "split_file_sha256": split_file_sha256,
    }
    return sha256_json(payload)


def identity_of(preds: SegmentationPredictions, split_file_sha256: str | None) -> str:
    """The identity of the test set that ``preds`` were scored on."""
    return segmentation_identity(preds.ids, preds.truth, preds.cases, preds.groups, preds.spacing, split_file_sha256)


# ------------------------------------------------------------------ cases
def case_arrays(preds: SegmentationPredictions) -> CaseArrays:
    """Stack each case's slices (in split order) into one array; 2D cases stay (H, W)."""
    order: list[str] = []
    members: dict[str, list[int]] = {}
    for k, c in enumerate(preds.cases):
        if c not in members:
            order.append(c)
            members[c] = []
        members[c].append(k)
    volumes = preds.volumes
    pred: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    spacing: list[tuple[float, ...] | None] = []
    groups: list[str] = []
    for c in order:
        idx = members[c]
        if volumes:
            pred.append(np.stack([preds.pred[k] for k in idx], axis=-1))
            truth.append(np.stack([preds.truth[k] for k in idx], axis=-1))
        else:
            pred.append(preds.pred[idx[0]])
            truth.append(preds.truth[idx[0]])
        if preds.spacing is None:
            spacing.append(None)
        else:
            s = tuple(float(v) for v in preds.spacing[idx[0]])
            spacing.append(s if volumes else s[:2])
        if preds.groups is not None:
            groups.append(str(preds.groups[idx[0]]))
    return CaseArrays(order, pred, truth, spacing, np.asarray(groups) if preds.groups is not None else None)


# ------------------------------------------------------------------ storage
def write_segmentation_predictions(path: Path, preds: SegmentationPredictions) -> dict[str, Any]:
    """Store predicted and true maps compactly (compressed npz); return the record's pointer."""
    dtype = preds.pred[0].dtype
    arrays: dict[str, Any] = {
        "ids": np.asarray(preds.ids, dtype=str),
        "cases": np.asarray(preds.cases, dtype=str),
        "shapes": np.asarray([m.shape for m in preds.truth], dtype=np.int32),
        "pred": np.concatenate([m.ravel() for m in preds.pred]).astype(dtype),
        "truth": np.concatenate([m.ravel() for m in preds.truth]).astype(dtype),
    }
    if preds.groups is not None:
        arrays["groups"] = np.asarray([str(g) for g in preds.groups], dtype=str)
    if preds.spacing is not None:
        arrays["spacing"] = np.asarray(preds.spacing, dtype=np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"file": path.name, "sha256": sha256_bytes(data), "n": len(preds.ids)}


def is_segmentation_archive(data: bytes) -> bool:
    """Whether npz bytes hold segmentation predictions (a ``pred`` array) rather than scores."""
    try:
        return "pred.npy" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def read_segmentation_predictions(path: str | Path) -> SegmentationPredictions:
    """Load a record's segmentation predictions file (predicted and true masks; no pickle, capped size)."""
    from .safe_files import PREDICTIONS_MAX_BYTES, read_capped

    return parse_segmentation_predictions(read_capped(Path(path), PREDICTIONS_MAX_BYTES))


def parse_segmentation_predictions(data: bytes) -> SegmentationPredictions:
    """Segmentation predictions from npz bytes, checked: known arrays only, no pickles, sizes that add up.

    Raises ``ValueError`` with a one-line reason."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"not an npz archive ({exc})") from None
    names = [i.filename for i in infos]
    allowed = {f"{a}.npy" for a in SEGMENTATION_ARRAYS}
    unknown = sorted(set(names) - allowed)
    if unknown or len(names) != len(set(names)):
        raise ValueError(f"holds unexpected members {unknown or names}; expected {sorted(allowed)}")
    for required in ("ids", "cases", "shapes", "pred", "truth"):
        if f"{required}.npy" not in names:
            raise ValueError(f"has no {required!r} array")
    if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED:
        raise ValueError(f"would expand to more than {MAX_UNCOMPRESSED} bytes")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {n: np.asarray(npz[n]) for n in SEGMENTATION_ARRAYS if f"{n}.npy" in names}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError("holds an object array; pickled data is refused") from None
        raise ValueError(f"an array cannot be read ({exc})") from None
    except Exception as exc:
        raise ValueError(f"an array cannot be read ({type(exc).__name__}: {exc})") from None
    ids, cases, shapes = arrays["ids"], arrays["cases"], arrays["shapes"]
    n = len(ids)
    if n == 0 or ids.ndim != 1 or ids.dtype.kind != "U":
        raise ValueError("'ids' must be a non-empty 1-D text array")
    if cases.shape != (n,) or cases.dtype.kind != "U":
        raise ValueError(f"'cases' must be {n} texts")
    if shapes.shape != (n, 2) or shapes.dtype.kind not in "iu" or (shapes < 1).any():
        raise ValueError(f"'shapes' must be ({n}, 2) positive integers")
    total = int(np.prod(shapes.astype(np.int64), axis=1).sum())
    pred, truth = arrays["pred"], arrays["truth"]
    for name, a in (("pred", pred), ("truth", truth)):
        if a.ndim != 1 or a.dtype.kind != "u" or len(a) != total:
            raise ValueError(f"'{name}' must be {total} unsigned integers (the masks' pixels), not {a.dtype} {a.shape}")
    groups = arrays.get("groups")
    if groups is not None and (groups.shape != (n,) or groups.dtype.kind != "U"):
        raise ValueError(f"'groups' must be {n} texts")
    spacing = arrays.get("spacing")
    if spacing is not None and (
        spacing.ndim != 2
        or len(spacing) != n
        or spacing.shape[1] not in (2, 3)
        or spacing.dtype.kind != "f"
        or not (np.isfinite(spacing).all() and (spacing > 0).all())
    ):
        raise ValueError(f"'spacing' must be ({n}, 2) or ({n}, 3) positive millimetres")
    bounds = np.concatenate([[0], np.cumsum(np.prod(shapes.astype(np.int64), axis=1))])
    split = lambda a: [a[bounds[k] : bounds[k + 1]].reshape(shapes[k]) for k in range(n)]  # noqa: E731
    return SegmentationPredictions(
        ids=[str(i) for i in ids.tolist()],
        pred=split(pred),
        truth=split(truth),
        cases=[str(c) for c in cases.tolist()],
        groups=groups,
        spacing=spacing,
    )


# ------------------------------------------------------------------ scoring
def score_segmentation(
    preds: SegmentationPredictions, n_classes: int, tolerance: float, resamples: int, seed: int
) -> dict[str, Any]:
    """Every segmentation metric per case, its case mean with a bootstrap interval, flags and notes.

    Returns ``{"metrics": {name: {value, ci_low, ci_high}}, "table": {name: per-case list},
    "cases": [...], "groups": [...] | None, "flags": [...], "notes": {...}}`` (JSON-ready).
    """
    from .seg_metrics import evaluate_segmentation, segmentation_flags, segmentation_notes, segmentation_table

    cases = case_arrays(preds)
    table = segmentation_table(cases.pred, cases.truth, n_classes, cases.spacing, tolerance)
    metrics = {k: v.as_dict() for k, v in evaluate_segmentation(table, cases.groups, resamples, seed).items()}
    conditions = segmentation_flags(cases.pred, cases.truth, n_classes, table)
    notes = {**segmentation_notes(cases.pred, cases.truth, n_classes), "conditions": sorted(conditions)}
    return {
        "metrics": metrics,
        "table": {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in table.items()},
        "cases": cases.ids,
        "groups": None if cases.groups is None else [str(g) for g in cases.groups],
        "flags": sorted(f for f in conditions if f in DEGENERATE_SEGMENTATION),
        "notes": notes,
    }


def case_table_predictions(scored: Mapping[str, Any]) -> Predictions:
    """Per-case metric values as ``Predictions`` (one row per case, one column per metric in
    ``segmentation_columns`` order), the form the leaderboard's paired comparisons resample."""
    table = scored["table"]
    columns = segmentation_columns(list(table))
    scores = np.asarray([[np.nan if v is None else v for v in table[c]] for c in columns], dtype=np.float64).T.reshape(
        len(scored["cases"]), len(columns)
    )
    groups = scored.get("groups")
    return Predictions(
        ids=list(scored["cases"]),
        labels=np.zeros(len(scored["cases"]), dtype=np.int64),
        scores=scores,
        groups=None if groups is None else np.asarray(groups),
    )


def segmentation_columns(names: Sequence[str]) -> list[str]:
    """The per-case metric names in a fixed order: the four means, then per class."""
    from .seg_metrics import SEG_METRICS

    rest = sorted((n for n in names if n not in SEG_METRICS), key=lambda n: (int(n.rsplit("_", 1)[1]), n))
    return [m for m in SEG_METRICS if m in names] + rest


def segmentation_column_index(metric: str, n_columns: int) -> int:
    """Which column of ``case_table_predictions``' scores holds ``metric``."""
    from .seg_metrics import SEG_METRICS

    names = list(SEG_METRICS)
    k = (n_columns - len(SEG_METRICS)) // len(SEG_METRICS)
    names += [f"{m}_class_{c}" for c in range(1, k + 1) for m in SEG_METRICS]
    names = segmentation_columns(names)
    if metric not in names:
        raise KeyError(f"{metric!r} is not a segmentation metric")
    return names.index(metric)
