"""The loaded-data-set interface that plugins return from ``DatasetSpec.load``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from .errors import UserError
from .io import sha256_json


class ImageSource(Protocol):
    """Anything indexable that yields decoded images (numpy arrays or PIL images)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclass
class Split:
    """One split of a data set.

    ``labels`` is (N,) integer class indices, or (N, C) 0/1 for multi-label tasks.
    ``groups`` holds patient (or lesion) ids where known, used for grouped bootstrap and
    leak checks. ``ids`` names each sample (a relative path or an index).

    Segmentation splits add ``masks``: one integer class map (H, W) per image, the image's own
    size, 0 background and 1..K the data set's foreground classes (``Dataset.classes`` names
    background first). ``labels`` is then (N,) 0/1, whether the mask holds any foreground (not
    scored). Images cut from volumes name their volume in ``cases`` (the slices of one volume
    contiguous and in slice order: stacked, they rebuild the volume, which is scored whole);
    ``None`` makes each image its own case. ``spacing`` is (N, 2) millimetres per pixel (row,
    column), or (N, 3) for slices of volumes (row, column, slice); ``None`` means pixel units.
    """

    name: str
    images: ImageSource
    labels: np.ndarray
    groups: np.ndarray | None = None
    ids: Sequence[str] | None = None
    masks: ImageSource | None = None
    cases: Sequence[str] | None = None
    spacing: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        n = len(self.images)
        if len(self.labels) != n:
            raise ValueError(f"split {self.name!r}: {n} images but {len(self.labels)} labels")
        if n == 0:
            raise UserError(f"split {self.name!r} is empty; check the data set's files and split options")
        if self.ids is None:
            self.ids = [f"{self.name}/{i}" for i in range(n)]
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"split {self.name!r}: {n} images but {len(self.masks)} masks")
        if self.cases is not None:
            self.cases = [str(c) for c in self.cases]
            if len(self.cases) != n:
                raise ValueError(f"split {self.name!r}: {n} images but {len(self.cases)} case ids")
            _check_contiguous(self.name, self.cases)
        if self.spacing is not None:
            self.spacing = np.asarray(self.spacing, dtype=np.float64)
            if self.spacing.ndim != 2 or len(self.spacing) != n or self.spacing.shape[1] not in (2, 3):
                raise ValueError(f"split {self.name!r}: spacing must be (N, 2) or (N, 3), not {self.spacing.shape}")
            if not (np.isfinite(self.spacing).all() and (self.spacing > 0).all()):
                raise ValueError(f"split {self.name!r}: spacing must be positive millimetres")

    def __len__(self) -> int:
        return len(self.images)


def _check_contiguous(split: str, cases: Sequence[str]) -> None:
    """The slices of one volume must follow each other, or stacking them would mix volumes."""
    seen: set[str] = set()
    previous = None
    for c in cases:
        if c != previous:
            if c in seen:
                raise ValueError(
                    f"split {split!r}: the slices of case {c!r} are not contiguous; keep each volume together"
                )
            seen.add(c)
            previous = c


class Dataset:
    """A data set: task, class names and named splits (``train``, ``val``, ``test``).

    ``fingerprint`` identifies exactly which data was used; plugins should set it from the
    files (relative path, size, label) or, for generated data, from the generator's inputs.
    """

    def __init__(
        self,
        task: str,
        classes: Sequence[str],
        splits: Mapping[str, Split],
        fingerprint: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.classes = tuple(classes)
        self._splits = dict(splits)
        self.info = dict(info or {})
        self.fingerprint = fingerprint or self._content_fingerprint()

    @property
    def split_names(self) -> tuple[str, ...]:
        """Names of the available splits."""
        return tuple(self._splits)

    def split(self, name: str) -> Split:
        """The split called ``name``; a missing split is a user error."""
        if name not in self._splits:
            raise UserError(f"data set has no split {name!r}; it has {sorted(self._splits)}")
        return self._splits[name]

    def _content_fingerprint(self) -> str:
        summary = {}
        for name, split in self._splits.items():
            summary[name] = {
                "n": len(split),
                "labels": sha256_json(np.asarray(split.labels).tolist()),
                "ids": sha256_json(list(split.ids or [])),
            }
        return sha256_json(summary)

    def check_group_leaks(self) -> None:
        """Fail when one patient (group) appears in two splits: that would inflate results."""
        seen: dict[Any, str] = {}
        for name, split in self._splits.items():
            if split.groups is None:
                continue
            for g in np.unique(split.groups):
                if g in seen and seen[g] != name:
                    raise UserError(
                        f"patient/group {g!r} appears in both split {seen[g]!r} and {name!r}; "
                        "splits must be grouped by patient"
                    )
                seen[g] = name


def array_fingerprint(*arrays: np.ndarray) -> str:
    """A stable hash of array contents (for data sets held in memory)."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()
