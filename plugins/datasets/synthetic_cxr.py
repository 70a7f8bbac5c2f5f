"""``synthetic/cxr-nodules``: chest-radiograph-like images with and without a nodule, with masks.

Generated deterministically from a seed (no download, no licence issues), so the default
benchmark runs anywhere. Each synthetic patient has two images (two exposures with
different positioning and noise) that share the label, and the split is grouped by patient.
Nodule masks are kept: ``synthetic/cxr-nodules-seg`` is the segmentation set of the same
images, those with a nodule (classes background and nodule, pixel units), split by patient.

scipy and scikit-learn are imported inside the functions that draw and split the images:
listing the registry imports this module, and must not import them.
"""

from __future__ import annotations

import numpy as np

from medfm.datasets import Dataset, DatasetSpec, Split, array_fingerprint, at_least, hookimpl

GENERATOR_VERSION = 1
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
#: the options ``load`` takes, with their defaults
OPTIONS = {"patients": 300, "size": 128, "seed": 0}
#: below 5 patients a class has fewer patients than the 5 split folds; below 3 px nothing can be drawn
LIMITS = {"patients": at_least(5), "size": at_least(3), "seed": at_least(0)}


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render_image(rng: np.random.Generator, size: int, nodule: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8, size x size) and its nodule mask (uint8 0/1)."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = size / 128.0
    shift_y, shift_x = rng.normal(0, 3 * s, 2)
    body = _ellipse(yy, xx, 68 * s + shift_y, 64 * s + shift_x, 62 * s, 54 * s).astype(np.float32)
    img = 0.15 + 0.55 * body
    lungs = np.zeros_like(img, dtype=bool)
    for side in (-1, 1):
        cy = 62 * s + shift_y + rng.normal(0, 1.5 * s)
        cx = 64 * s + shift_x + side * (22 * s + rng.normal(0, 1.5 * s))
        lung = _ellipse(yy, xx, cy, cx, (38 + rng.normal(0, 2)) * s, (15 + rng.normal(0, 1)) * s)
        lungs |= lung
    img[lungs] -= 0.35
    for k in range(9):  # ribs: bright curved bands across the lung fields
        y0 = (28 + 10.5 * k) * s + shift_y
        curve = y0 + 6 * s * np.cos((xx - 64 * s - shift_x) / (40 * s))
        img += 0.12 * np.exp(-((yy - curve) ** 2) / (2 * (1.6 * s) ** 2)) * lungs
    spine = np.exp(-((xx - 64 * s - shift_x) ** 2) / (2 * (5 * s) ** 2)) * body
    img += 0.25 * spine
    mask = np.zeros((size, size), dtype=np.uint8)
    if nodule:
        ys, xs = np.nonzero(lungs & (spine < 0.2))
        i = rng.integers(len(ys))
        radius = rng.uniform(4.0, 7.0) * s
        blob = np.exp(-((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2) / (2 * radius**2))
        img += rng.uniform(0.18, 0.3) * blob
        mask = (blob > np.exp(-0.5)).astype(np.uint8)
    img = ndimage.gaussian_filter(img, 0.8 * s)
    img += rng.normal(0, 0.045, img.shape) + 0.04 * ndimage.gaussian_filter(rng.normal(0, 1, img.shape), 6 * s)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), mask


def generate(patients: int = 300, size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """All images, masks, labels and patient ids, deterministic in (patients, size, seed)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(patients) % 2)
    images, masks, ys, groups = [], [], [], []
    for p in range(patients):
        for _ in range(2):
            img, mask = render_image(rng, size, bool(labels[p]))
            images.append(img)
            masks.append(mask)
            ys.append(labels[p])
            groups.append(f"P{p:04d}")
    return {
        "images": np.stack(images),
        "masks": np.stack(masks),
        "labels": np.asarray(ys, dtype=np.int64),
        "groups": np.asarray(groups),
    }


def patient_split(groups: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Seeded, label-stratified split of patients into train/val/test index arrays."""
    from sklearn.model_selection import StratifiedGroupKFold

    # 5 folds of 20%: 3 train, 1 val, 1 test
    folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed).split(labels, labels, groups))
    test, val = folds[0][1], folds[1][1]
    train = np.setdiff1d(np.arange(len(labels)), np.concatenate([test, val]))
    return {"train": train, "val": np.sort(val), "test": np.sort(test)}


def load(spec: DatasetSpec, patients: int = 300, size: int = 128, seed: int = 0) -> Dataset:
    """Generate the data set (about a second) and split it by patient."""
    data = generate(patients, size, seed)
    index = patient_split(data["groups"], data["labels"], seed)
    splits = {
        name: Split(
            name,
            data["images"][idx],
            data["labels"][idx],
            groups=data["groups"][idx],
            ids=[f"{data['groups'][i]}/{i}" for i in idx],
            masks=data["masks"][idx],
        )
        for name, idx in index.items()
    }
    fingerprint = array_fingerprint(
        np.asarray([GENERATOR_VERSION, patients, size, seed]), data["images"], data["labels"]
    )
    return Dataset(
        "binary",
        spec.classes,
        splits,
        fingerprint,
        info={"generator_version": GENERATOR_VERSION, "patients": patients, "size": size, "seed": seed},
    )


def load_segmentation(spec: DatasetSpec, patients: int = 300, size: int = 128, seed: int = 0) -> Dataset:
    """The images with a nodule and their masks, split by patient (60/20/20)."""
    data = generate(patients, size, seed)
    keep = np.flatnonzero(data["labels"] == 1)
    groups = data["groups"][keep]
    index = patient_split(groups, np.ones(len(keep), dtype=np.int64), seed)
    splits = {}
    for name, idx in index.items():
        rows = keep[idx]
        splits[name] = Split(
            name,
            data["images"][rows],
            (data["masks"][rows].reshape(len(rows), -1).max(1) > 0).astype(np.int64),
            groups=data["groups"][rows],
            ids=[f"{data['groups'][i]}/{i}" for i in rows],
            masks=data["masks"][rows],
        )
    fingerprint = array_fingerprint(
        np.asarray([GENERATOR_VERSION, patients, size, seed]), data["images"][keep], data["masks"][keep]
    )
    info = {
        "generator_version": GENERATOR_VERSION,
        "patients": patients,
        "size": size,
        "seed": seed,
        "segmentation": {"volumes": False, "spacing_unit": "pixel", "window": "none (8-bit radiographs)"},
    }
    return Dataset("segmentation", spec.classes, splits, fingerprint, info=info)


@hookimpl
def register_datasets(register):
    """The synthetic chest-radiograph nodule set, and its nodule segmentation set."""
    register(
        DatasetSpec(
            name="synthetic/cxr-nodules",
            load=load,
            task="binary",
            classes=("no nodule", "nodule"),
            splits={"train": 360, "val": 120, "test": 120},
            primary_metric="auroc",
            modality="X-ray (synthetic)",
            synthetic=True,
            options=OPTIONS,
            limits=LIMITS,
            license="CC0-1.0 (generated by medfm)",
            citation="medfm synthetic chest radiographs, generator v1",
            revision=f"generator-{GENERATOR_VERSION}",
            description="600 synthetic 128 px chest radiographs (300 patients x 2), nodule vs none, with masks",
        )
    )
    register(
        DatasetSpec(
            name="synthetic/cxr-nodules-seg",
            load=load_segmentation,
            task="segmentation",
            classes=("background", "nodule"),
            splits={"train": 180, "val": 60, "test": 60},
            primary_metric="dice",
            modality="X-ray (synthetic)",
            synthetic=True,
            options=OPTIONS,
            limits=LIMITS,
            license="CC0-1.0 (generated by medfm)",
            citation="medfm synthetic chest radiographs, generator v1",
            revision=f"generator-{GENERATOR_VERSION}",
            description="the 300 synthetic radiographs with a nodule (150 patients x 2) and their nodule masks",
            nsd_tolerance_mm=2.0,
        )
    )
