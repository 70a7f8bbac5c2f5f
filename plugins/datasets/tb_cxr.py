"""``tb/montgomery`` and ``tb/shenzhen``: the NLM tuberculosis chest X-ray sets (Jaeger et al. 2014).

Layouts (as unzipped from the NLM download)::

    <root>/CXR_png/MCUCXR_0001_0.png                       root = MontgomerySet (or its parent)
    <root>/ManualMask/leftMask/MCUCXR_0001_0.png
    <root>/ManualMask/rightMask/MCUCXR_0001_0.png
    <root>/ClinicalReadings/MCUCXR_0001_0.txt

    <root>/CXR_png/CHNCXR_0001_0.png                       root = ChinaSet_AllFiles (or its parent)

The label is the file name's suffix: ``_0`` normal, ``_1`` tuberculosis. Each image is one
patient. No official split: seeded, stratified, written to a split file. Montgomery's manual
lung masks are exposed as each split's ``masks``: a uint8 label map with 0 background,
1 left lung, 2 right lung (the patient's left and right).

``tb/montgomery-lungs`` and ``tb/shenzhen-lungs`` are the segmentation sets of the published
lung masks, left and right merged into one ``lung`` class (the DINOv2 radiology study's task):
Montgomery's ``ManualMask/{leftMask,rightMask}/``, and for Shenzhen the lung mask release
(``mask/CHNCXR_0001_0_mask.png`` beside ``CXR_png/``, or the folder named by the option
``mask_dir``); only the images that have a mask are used. 2D, pixel units.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medfm.datasets import (
    Dataset,
    DatasetSpec,
    Sample,
    UserError,
    build_dataset,
    default_data_root,
    file_dataset_limits,
    file_dataset_options,
    hookimpl,
    parse_options,
    require_root,
)

CLASSES = ("normal", "tuberculosis")
CITATION = (
    "Jaeger, S. et al. Two public chest X-ray datasets for computer-aided screening of pulmonary diseases. "
    "Quant. Imaging Med. Surg. 4(6), 475-477 (2014)"
)
LICENSE = "public, U.S. National Library of Medicine (cite Jaeger et al. 2014)"
SETS = {"montgomery": ("MontgomerySet", "MCUCXR"), "shenzhen": ("ChinaSet_AllFiles", "CHNCXR")}
SUFFIX = re.compile(r"_([01])$")


class LungMasks:
    """Montgomery lung masks as label maps (0 background, 1 left lung, 2 right lung), read on demand."""

    def __init__(self, left: Sequence[Path], right: Sequence[Path]) -> None:
        self.left, self.right = list(left), list(right)

    def __len__(self) -> int:
        return len(self.left)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.left[index]) as a, Image.open(self.right[index]) as b:
            left, right = np.asarray(a.convert("L")) > 0, np.asarray(b.convert("L")) > 0
        return (left * 1 + right * 2 * ~left).astype(np.uint8)


def make_load(key: str):
    """The loader of one of the two sets."""
    folder, prefix = SETS[key]
    layout = f"<root>/CXR_png/{prefix}_NNNN_<0|1>.png (root = the {folder} folder)"

    def load(spec: DatasetSpec, **options: Any) -> Dataset:
        opts = parse_options(spec.name, options, default_data_root("tb") / folder)
        root = require_root(spec.name, opts.root, layout)
        if not (root / "CXR_png").is_dir() and (root / folder / "CXR_png").is_dir():
            root = opts.root = root / folder
        images = root / "CXR_png"
        if not images.is_dir():
            raise UserError(f"{spec.name}: {images} does not exist; expected layout: {layout}")
        samples = []
        for path in sorted(images.glob("*.png")):
            m = SUFFIX.search(path.stem)
            if not m:
                raise UserError(f"{spec.name}: file {path} has no _0 (normal) or _1 (TB) suffix; expected {layout}")
            samples.append(Sample(path, int(m.group(1)), f"CXR_png/{path.name}", path.stem, source="CXR_png"))
        masks: Callable[[list[Sample]], LungMasks] | None = None
        mask_dir = root / "ManualMask"
        if key == "montgomery" and mask_dir.is_dir():

            def masks(members: list[Sample]) -> LungMasks:
                left = [mask_dir / "leftMask" / s.path.name for s in members]
                right = [mask_dir / "rightMask" / s.path.name for s in members]
                absent = [p for p in left + right if not p.is_file()]
                if absent:
                    raise UserError(
                        f"{spec.name}: lung mask {absent[0]} does not exist; expected "
                        "<root>/ManualMask/{leftMask,rightMask}/<image name>"
                    )
                return LungMasks(left, right)

        info = {
            "grouped_by": "image (one image per patient)",
            "masks": "0 background, 1 left lung, 2 right lung" if masks else None,
        }
        return build_dataset(spec.name, "binary", CLASSES, samples, opts, info, masks=masks)

    return load


class MergedLungMasks:
    """Lung masks as one class (0 background, 1 lung), from one or two (left, right) files each."""

    def __init__(self, files: Sequence[Sequence[Path]]) -> None:
        self.files = [list(f) for f in files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image

        out = None
        for path in self.files[index]:
            with Image.open(path) as im:
                m = np.asarray(im.convert("L")) > 127
            out = m if out is None else out | m
        assert out is not None
        return out.astype(np.uint8)


def make_lungs_load(key: str):
    """The loader of a lung segmentation set (masks merged into one class)."""
    folder, prefix = SETS[key]
    layout = f"<root>/CXR_png/{prefix}_NNNN_<0|1>.png with " + (
        "<root>/ManualMask/{leftMask,rightMask}/<name>.png" if key == "montgomery" else "<root>/mask/<stem>_mask.png"
    )

    def load(spec: DatasetSpec, **options: Any) -> Dataset:
        from medfm.datasets import sha256_json

        opts = parse_options(spec.name, options, default_data_root("tb") / folder, extra={"mask_dir": None})
        mask_option = opts.extra.get("mask_dir")
        root = require_root(spec.name, opts.root, layout)
        if not (root / "CXR_png").is_dir() and (root / folder / "CXR_png").is_dir():
            root = opts.root = root / folder
        images = root / "CXR_png"
        if not images.is_dir():
            raise UserError(f"{spec.name}: {images} does not exist; expected layout: {layout}")
        samples, files = [], []
        mask_root = Path(mask_option) if mask_option else root / ("ManualMask" if key == "montgomery" else "mask")
        if not mask_root.is_dir():
            raise UserError(f"{spec.name}: mask folder {mask_root} does not exist; expected layout: {layout}")
        for path in sorted(images.glob("*.png")):
            if key == "montgomery":
                pair = [mask_root / "leftMask" / path.name, mask_root / "rightMask" / path.name]
            else:
                pair = [mask_root / f"{path.stem}_mask.png"]
            if not all(p.is_file() for p in pair):
                continue
            samples.append(Sample(path, 1, f"CXR_png/{path.name}", path.stem, source="CXR_png", extra=pair))
            files += [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in pair]
        if not samples:
            raise UserError(f"{spec.name}: no image in {images} has a lung mask under {mask_root}; layout: {layout}")
        info = {
            "grouped_by": "image (one image per patient)",
            "masks": "0 background, 1 lung (left and right merged)",
            "segmentation": {"volumes": False, "spacing_unit": "pixel", "window": "none (8-bit radiographs)"},
        }
        ds = build_dataset(
            spec.name, "segmentation", LUNG_CLASSES, samples, opts, info,
            masks=lambda members: MergedLungMasks([m.extra for m in members]),
        )  # fmt: skip
        mask_state = sha256_json(sorted(files))  # the masks are data too: a changed mask reruns the cells
        ds.fingerprint = sha256_json([ds.fingerprint, sha256_json(sorted((n, size) for n, size, _ in files))])
        ds.info["disk_state"] = sha256_json([ds.info.get("disk_state"), mask_state])
        return ds

    return load


LUNG_CLASSES = ("background", "lung")


@hookimpl
def register_datasets(register):
    """Montgomery County and Shenzhen TB sets, and their lung segmentation sets."""
    for key, (folder, _), n, where in (
        ("montgomery", SETS["montgomery"], 138, "Montgomery County, MD, USA"),
        ("shenzhen", SETS["shenzhen"], 662, "Shenzhen No.3 Hospital, China"),
    ):
        register(
            DatasetSpec(
                name=f"tb/{key}",
                load=make_load(key),
                task="binary",
                classes=CLASSES,
                splits={"train": None, "val": None, "test": None},
                primary_metric="auroc",
                modality="chest X-ray",
                license=LICENSE,
                citation=CITATION,
                revision="1",
                options=file_dataset_options(),
                limits=file_dataset_limits(),
                description=f"{folder}: {n} chest radiographs from {where}, TB vs normal from the file name"
                + ("; left/right lung masks" if key == "montgomery" else ""),
            )
        )
        register(
            DatasetSpec(
                name=f"tb/{key}-lungs",
                load=make_lungs_load(key),
                task="segmentation",
                classes=LUNG_CLASSES,
                primary_metric="dice",
                modality="chest X-ray",
                license=LICENSE,
                citation=CITATION,
                revision="1",
                options={**file_dataset_options(), "mask_dir": None},
                limits=file_dataset_limits(),
                description=f"{folder}: lung segmentation from the published masks (left + right = lung)",
            )
        )
