"""The identity of a test set: which cases, in which order, with which labels and patients.

Two numbers are comparable only when they were computed on the same test set. The identity
is a sha256 over the ordered test ids, their labels, their patient/group ids (which decide
the bootstrap's resampling unit) and, where the split came from a split file, that file's
sha256. The runner stores it in every record, ``medfm validate`` recomputes it from the
stored predictions, and the leaderboard keys its columns by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .io import sha256_file, sha256_json

IDENTITY_VERSION = 1


def split_identity(
    ids: Sequence[str], labels: np.ndarray, groups: np.ndarray | None = None, split_file_sha256: str | None = None
) -> str:
    """sha256 (hex) of the ordered ids, labels, groups and split file hash of a test split."""
    labels = np.asarray(labels)
    payload = {
        "version": IDENTITY_VERSION,
        "ids": [str(i) for i in ids],
        "labels": labels.astype(np.int64).tolist(),
        "groups": None if groups is None else [str(g) for g in np.asarray(groups).tolist()],
        "split_file_sha256": split_file_sha256,
    }
    return sha256_json(payload)


def split_file_sha256(info: Mapping[str, Any]) -> str | None:
    """sha256 of the split file a data set's ``info`` names, where it names one that exists."""
    name = info.get("split_file")
    if not isinstance(name, str) or not name:
        return None
    path = Path(name)
    return sha256_file(path) if path.is_file() else None


def identity_block(split: Any, info: Mapping[str, Any], masks: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """The record's ``test_set``: identity, size, split name and split file hash. For segmentation
    splits (``masks`` given: the split's true masks) the identity covers the masks, cases and spacing."""
    sha = split_file_sha256(info)
    if masks is not None:
        from .seg_predictions import segmentation_identity

        identity = segmentation_identity(split.ids, masks, split.cases or split.ids, split.groups, split.spacing, sha)
    else:
        identity = split_identity(split.ids, split.labels, split.groups, sha)
    return {
        "identity": identity,
        "n": len(split),
        "split": split.name,
        "split_file_sha256": sha,
    }
