"""Trustworthy splits: official where published, else seeded, stratified and grouped, always recorded.

``assign_splits`` takes one row per sample (id, label, patient/lesion group and the official
split name where the publisher gave one) and returns each sample's split:

- every sample has an official ``train``/``val``/``test`` split: used as published;
- an official ``test`` but no ``val`` (most data sets): ``val`` is carved from the training
  pool by group, ``val_fraction`` of it;
- no official split at all: ``test_fraction`` of the groups go to ``test``, then
  ``val_fraction`` of the rest to ``val``.

Carving uses scikit-learn's ``StratifiedGroupKFold`` (shuffled with ``seed``): one group never
straddles two splits and label proportions are kept as far as the groups allow. Multi-label
rows are stratified by their rarest positive label. A generated split is written to a JSON
split file (ids per split, seed, fractions, method) under the split folder, and read back on
later runs; a user's ``split_file`` that exists is applied as given, so a published or shared
split can be reused exactly.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import UserError
from .io import atomic_path, sha256_json

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE_FORMAT = 1
METHOD = "sklearn.StratifiedGroupKFold(shuffle=True), rarest-positive-label strata for multi-label"


@dataclass
class SplitResult:
    """Each sample's split name plus what to record about how it was made."""

    names: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def strata(labels: np.ndarray) -> np.ndarray:
    """1-D strata: the label itself, or for multi-label rows the rarest positive class (-1 if none)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    counts = labels.sum(axis=0)
    order = np.argsort(counts, kind="stable")  # rarest first
    out = np.full(len(labels), -1, dtype=np.int64)
    for c in order[::-1]:  # the rarest positive class written last wins
        out[labels[:, c] > 0] = c
    return out


def carve(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (rest, part) with about ``fraction`` of the groups in ``part``."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups[indices]))
    if not 0.0 < fraction < 1.0:
        raise UserError(f"{what} fraction {fraction!r} must be between 0 and 1")
    if n_groups < 2:
        raise UserError(
            f"cannot carve a {what} split from {len(indices)} samples of {n_groups} patient(s)/group(s); "
            "add data or give an official split"
        )
    largest_stratum = int(np.unique(strata(labels)[indices], return_counts=True)[1].max())
    k = int(min(n_groups, largest_stratum, max(2, round(1.0 / fraction))))
    if k < 2:
        raise UserError(f"cannot carve a {what} split from {len(indices)} samples; add data or give an official split")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members"
        rest, part = next(splitter.split(indices, strata(labels)[indices], groups[indices]))
    return np.sort(indices[rest]), np.sort(indices[part])


def _generate(
    labels: np.ndarray, groups: np.ndarray, official: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, str]:
    names = official.astype(object).copy()
    present = {str(v) for v in official if v}
    if not present:
        rest, test = carve(np.arange(len(labels)), labels, groups, test_fraction, seed, "test")
        names[test] = "test"
        _, val = carve(rest, labels, groups, val_fraction / (1.0 - test_fraction), seed, "val")
        names[rest] = "train"
        names[val] = "val"
        return names, f"generated: test {test_fraction:g}, val {val_fraction:g} of all groups"
    pool = np.flatnonzero((official == "train") | (official == ""))
    if "val" in present:
        names[pool] = "train"
        return names, "official"
    _, val = carve(pool, labels, groups, val_fraction, seed, "val")
    names[pool] = "train"
    names[val] = "val"
    return names, f"official train/test; val carved from the training pool ({val_fraction:g} of its groups)"


def assign_splits(
    dataset: str,
    ids: Sequence[str],
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    official: Sequence[str | None] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_dir: str | Path | None = None,
    split_file: str | Path | None = None,
    tolerate_unknown: Sequence[str] = (),
) -> SplitResult:
    """Each sample's split, official or generated (and written to a split file); see the module doc."""
    ids = [str(i) for i in ids]
    labels = np.asarray(labels)
    groups = np.asarray(ids if groups is None else [str(g) for g in groups], dtype=object)
    official_arr = np.asarray(["" if o is None else str(o) for o in (official or [""] * len(ids))], dtype=object)
    bad = sorted({o for o in official_arr if o and o not in SPLIT_NAMES})
    if bad:
        raise ValueError(f"official split names {bad} are not among {SPLIT_NAMES}")
    info: dict[str, Any] = {"split_seed": seed, "split_file": None}
    if split_file is not None and Path(split_file).is_file():
        names = read_split_file(Path(split_file), ids, set(tolerate_unknown))
        info.update(split_file=str(split_file), split_method=f"split file {split_file}")
        return _checked(dataset, SplitResult(names, info), groups)
    if all(o in SPLIT_NAMES for o in official_arr) and {"train", "val", "test"} <= set(official_arr):
        info.update(split_method="official", split_seed=None)
        return _checked(dataset, SplitResult(official_arr, info), groups)
    key = sha256_json(
        {
            "format": SPLIT_FILE_FORMAT,
            "dataset": dataset,
            "ids": ids,
            "labels": labels.tolist(),
            "groups": groups.tolist(),
            "official": official_arr.tolist(),
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
        }
    )
    target = (
        Path(split_file)
        if split_file is not None
        else Path(split_dir) / _safe(dataset) / f"split-seed{seed}-{key[:16]}.json"
        if split_dir is not None
        else None
    )
    if target is not None and target.is_file():
        names = read_split_file(target, ids, set())
        method = json.loads(target.read_text(encoding="utf-8")).get("method", "")
    else:
        names, method = _generate(labels, groups, official_arr, seed, val_fraction, test_fraction)
        if target is not None:
            write_split_file(
                target,
                dataset,
                ids,
                names,
                {
                    "seed": seed,
                    "val_fraction": val_fraction,
                    "test_fraction": test_fraction,
                    "key": key,
                    "method": method,
                    "algorithm": METHOD,
                },
            )
    info.update(
        split_file=str(target) if target is not None else None,
        split_method=method,
        val_fraction=val_fraction,
        test_fraction=None if "test" in set(official_arr) else test_fraction,
    )
    return _checked(dataset, SplitResult(names, info), groups)


def _checked(dataset: str, result: SplitResult, groups: np.ndarray) -> SplitResult:
    for name in SPLIT_NAMES:
        if not np.any(result.names == name):
            raise UserError(
                f"{dataset}: split {name!r} is empty; check the data set's files and split options "
                f"(val_fraction, test_fraction, split_file)"
            )
    owner: dict[Any, str] = {}
    for g, s in zip(groups, result.names):
        if s and owner.setdefault(g, s) != s:
            raise UserError(
                f"{dataset}: patient/group {g!r} appears in both split {owner[g]!r} and {s!r}; "
                "splits must be grouped by patient"
            )
    result.info["split_sizes"] = {n: int(np.sum(result.names == n)) for n in SPLIT_NAMES}
    return result


def write_split_file(path: Path, dataset: str, ids: Sequence[str], names: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write the split (ids per split plus how it was made) atomically as JSON."""
    payload = {
        "format": SPLIT_FILE_FORMAT,
        "dataset": dataset,
        **meta,
        "splits": {n: [i for i, s in zip(ids, names) if s == n] for n in SPLIT_NAMES},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def read_split_file(path: Path, ids: Sequence[str], tolerate_unknown: set[str]) -> np.ndarray:
    """Split names for ``ids`` from a split file; unknown or missing ids are user errors."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        splits = payload["splits"]
        if not isinstance(splits, dict):
            raise TypeError("'splits' must be an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"split file {path} is not a medfm split file ({type(exc).__name__}: {exc}); "
            'expected JSON with {"splits": {"train": [ids], "val": [...], "test": [...]}}'
        ) from None
    where: dict[str, str] = {}
    for name, members in splits.items():
        if name not in SPLIT_NAMES:
            raise UserError(f"split file {path}: unknown split {name!r}; use {SPLIT_NAMES}")
        for m in members:
            if m in where:
                raise UserError(f"split file {path}: sample {m!r} is listed in both {where[m]!r} and {name!r}")
            where[m] = name
    known = set(ids)
    unknown = [m for m in where if m not in known and m not in tolerate_unknown]
    if unknown:
        raise UserError(
            f"split file {path} lists {len(unknown)} sample(s) that the data set does not have, e.g. {unknown[0]!r}"
        )
    missing = [i for i in ids if i not in where]
    if missing:
        raise UserError(
            f"split file {path} does not assign {len(missing)} sample(s) of the data set, e.g. {missing[0]!r}"
        )
    return np.asarray([where[i] for i in ids], dtype=object)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
