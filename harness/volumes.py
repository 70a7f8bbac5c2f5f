"""Volumes (NIfTI) for 2D backbones: canonical orientation, intensity windows, axial slices.

A volume is read with nibabel and reoriented to the closest canonical orientation (RAS, with
``nibabel.as_closest_canonical``), so the third array axis is always the axial (inferior to
superior) one and the voxel spacing is the header's zooms in that order; its label volume gets
exactly the same transform. Intensities go through the modality's window before the 8-bit
image pipeline: CT is clipped to [-1024, 600] HU, MRI to the volume's own 5th-95th percentile
(of its non-zero voxels: the background of a skull-stripped or masked scan would pull it
down), both scaled to [0, 1] (the DINOv2 radiology study's windows).

``volume_dataset`` turns a list of :class:`VolumeCase` into a segmentation ``Dataset``: split by
volume (a volume's slices never fall in two splits; grouped by patient where cases name one),
every axial slice an image with its mask, ``cases`` naming the volume and ``spacing`` (row,
column, slice) in mm. Slices are read on demand from a small cache of decoded volumes, since
extraction visits them in order.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .dataset import Dataset, Split
from .errors import UserError
from .io import sha256_json

CT_WINDOW = (-1024.0, 600.0)
MRI_PERCENTILES = (5.0, 95.0)
WINDOWS = ("ct", "mri")


@dataclass(frozen=True)
class VolumeCase:
    """One volume: its id, image file, label file and patient (``None``: its own patient)."""

    id: str
    image: Path
    label: Path
    patient: str | None = None


def _canonical(path: Path) -> Any:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; check the data set's folder") from None
    except Exception as exc:
        raise UserError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return nib.as_closest_canonical(img)


def canonical_header(path: Path) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The array shape and voxel spacing (mm) of a volume after reorientation to RAS, from its
    header alone (no voxel is read)."""
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))  # a Nifti1Image (or another spatial image) for these files
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; check the data set's folder") from None
    except Exception as exc:
        raise UserError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if len(img.shape) not in (3, 4):
        raise UserError(f"{path}: a volume must be 3D (or 4D, first channel used), not {len(img.shape)}D")
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = img.header.get_zooms()
    shape, spacing = [0, 0, 0], [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt[:3]):
        shape[int(target)] = int(img.shape[axis])
        spacing[int(target)] = float(zooms[axis])
    return (shape[0], shape[1], shape[2]), (spacing[0], spacing[1], spacing[2])


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A volume reoriented to RAS (the first channel of a 4D file) and its voxel spacing in mm."""
    img = _canonical(Path(path))
    data = np.asarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"{path}: a volume must be 3D (or 4D, first channel used), not {data.ndim}D")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, (zooms[0], zooms[1], zooms[2])


def window_volume(data: np.ndarray, window: str) -> np.ndarray:
    """Intensities to uint8 through the window: ``"ct"`` [-1024, 600] HU, ``"mri"`` the volume's
    5th-95th percentile of non-zero voxels; both scaled to [0, 1] first."""
    x = np.asarray(data, dtype=np.float32)
    if window == "ct":
        lo, hi = CT_WINDOW
    elif window == "mri":
        values = x[x != 0]
        values = values if values.size else x.ravel()
        lo, hi = (float(v) for v in np.percentile(values, MRI_PERCENTILES))
    else:
        raise UserError(f"window {window!r} is unknown; use one of {WINDOWS}")
    if hi <= lo:
        hi = lo + 1.0
    scaled = (np.clip(x, lo, hi) - lo) / (hi - lo)
    return (scaled * 255.0).round().astype(np.uint8)


class _Volumes:
    """Decoded, windowed volumes and labels, the most recent ``keep`` of them in memory."""

    def __init__(self, cases: Sequence[VolumeCase], window: str, keep: int = 2) -> None:
        self.cases, self.window, self.keep = list(cases), window, keep
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        case = self.cases[k]
        image, _ = read_volume(case.image)
        label, _ = read_volume(case.label)
        if label.shape != image.shape:
            raise UserError(
                f"{case.label}: label volume of shape {label.shape} does not match its image "
                f"{case.image} of shape {image.shape}; use the label file published with that image"
            )
        pair = (window_volume(image, self.window), np.rint(label).astype(np.uint8))
        self._cache[k] = pair
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return pair

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers start with an empty cache
        return {"cases": self.cases, "window": self.window, "keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cases"], state["window"], state["keep"])  # type: ignore[misc]


class _Slices:
    """Axial slices of some volumes, as an image (or mask) source."""

    def __init__(self, volumes: _Volumes, index: Sequence[tuple[int, int]], masks: bool) -> None:
        self.volumes, self.index, self.masks = volumes, list(index), masks

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        k, z = self.index[i]
        image, label = self.volumes.get(k)
        return np.ascontiguousarray((label if self.masks else image)[:, :, z])


def volume_dataset(
    name: str,
    cases: Sequence[VolumeCase],
    classes: Sequence[str],
    window: str,
    root: Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_dir: Path | None = None,
    split_file: Path | None = None,
    info: Mapping[str, Any] | None = None,
) -> Dataset:
    """A segmentation ``Dataset`` of every axial slice of ``cases``, split by volume (seeded,
    grouped by patient), with ``cases`` and ``spacing`` (row, column, slice mm) per slice."""
    from .image_cache import default_cache_root
    from .splits import assign_splits

    if window not in WINDOWS:
        raise UserError(f"{name}: window {window!r} is unknown; use one of {WINDOWS}")
    if len(cases) < 3:
        raise UserError(f"{name}: {len(cases)} labelled volume(s) under {root}; a train/val/test split needs 3")
    shapes, spacings, files = [], [], []
    for case in cases:
        for path in (case.image, case.label):
            if not path.is_file():
                raise UserError(f"{name}: {path} is missing; check the data set's folder (root {root})")
        shape, spacing = canonical_header(case.image)
        label_shape, _ = canonical_header(case.label)
        if label_shape != shape:
            raise UserError(
                f"{name}: label volume {case.label} has shape {label_shape}, its image {case.image} has "
                f"{shape}; use the label file published with that image"
            )
        shapes.append(shape)
        spacings.append(spacing)
        for path in (case.image, case.label):
            stat = path.stat()
            files.append((_relative(root, path), stat.st_size, stat.st_mtime_ns))
    ids = [c.id for c in cases]
    patients = [c.patient or c.id for c in cases]
    result = assign_splits(
        name,
        ids,
        np.zeros(len(ids), dtype=np.int64),
        np.asarray(patients),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_dir=split_dir if split_dir is not None else default_cache_root() / "splits",
        split_file=split_file,
    )
    volumes = _Volumes(cases, window)
    splits = {}
    for split in ("train", "val", "test"):
        members = [k for k in range(len(cases)) if result.names[k] == split]
        if not members:
            raise UserError(f"{name}: the {split} split got no volume; lower the other fractions or add volumes")
        index = [(k, z) for k in members for z in range(shapes[k][2])]
        splits[split] = Split(
            split,
            _Slices(volumes, index, masks=False),
            np.zeros(len(index), dtype=np.int64),
            groups=np.asarray([patients[k] for k, _ in index]),
            ids=[f"{ids[k]}/z{z:04d}" for k, z in index],
            masks=_Slices(volumes, index, masks=True),
            cases=[ids[k] for k, _ in index],
            spacing=np.asarray([spacings[k] for k, _ in index], dtype=np.float64),
        )
    files_state = sorted(files)
    fingerprint = sha256_json(
        {
            "files": [(p, s) for p, s, _ in files_state],
            "classes": list(classes),
            "window": window,
            "split": result.names.tolist(),
        }
    )
    details = {
        **dict(info or {}),
        **result.info,
        "root": str(root),
        "volumes": len(cases),
        "segmentation": {"volumes": True, "spacing_unit": "mm", "window": _describe(window)},
        "disk_state": sha256_json(files_state),
    }
    return Dataset("segmentation", classes, splits, fingerprint, info=details)


def _describe(window: str) -> str:
    if window == "ct":
        return f"CT clipped to [{CT_WINDOW[0]:g}, {CT_WINDOW[1]:g}] HU, scaled to [0, 1]"
    return "MRI clipped to the volume's 5th-95th percentile of non-zero voxels, scaled to [0, 1]"


def _relative(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name
