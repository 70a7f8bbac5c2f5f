"""``isic/2019``: ISIC 2019 Challenge training set, 8 dermoscopic diagnoses, split by lesion.

Layout (the challenge downloads, unzipped)::

    <root>/ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot 1.0/0.0)
    <root>/ISIC_2019_Training_Metadata.csv      image,age_approx,anatom_site_general,lesion_id,sex
    <root>/ISIC_2019_Training_Input/ISIC_0000000.jpg
      (or the zip's nesting ISIC_2019_Training_Input/ISIC_2019_Training_Input/)

The challenge's test labels are not public, so the split is seeded, stratified by diagnosis
and grouped by ``lesion_id`` (images of one lesion stay together; images without a lesion id
are their own group), written to a split file. ``UNK`` never occurs in the training labels;
a row marked ``UNK`` or with no single 1.0 is an error naming the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.datasets import (
    Dataset,
    DatasetSpec,
    Sample,
    build_dataset,
    default_data_root,
    file_dataset_limits,
    file_dataset_options,
    hookimpl,
    parse_options,
    read_table,
    require_file,
    require_root,
)

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
NAMES = (
    "melanoma",
    "melanocytic nevus",
    "basal cell carcinoma",
    "actinic keratosis",
    "benign keratosis",
    "dermatofibroma",
    "vascular lesion",
    "squamous cell carcinoma",
)
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
LAYOUT = f"<root>/{GROUND_TRUTH}, <root>/{METADATA}, <root>/ISIC_2019_Training_Input/<image>.jpg"
CITATION = (
    "Tschandl, P. et al. The HAM10000 dataset, Sci. Data 5, 180161 (2018); Codella, N. et al. ISIC 2017, "
    "arXiv:1710.05006; Combalia, M. et al. BCN20000, arXiv:1908.02288 (2019)"
)
LICENSE = "CC BY-NC 4.0"


def image_folder(root: Path) -> Path:
    """The training image folder, handling the zip's double nesting."""
    folder = root / "ISIC_2019_Training_Input"
    nested = folder / "ISIC_2019_Training_Input"
    return nested if nested.is_dir() else folder


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the ground truth and the lesion ids; see the module docstring."""
    opts = parse_options(spec.name, options, default_data_root("isic2019"))
    root = require_root(spec.name, opts.root, LAYOUT)
    truth = read_table(
        require_file(spec.name, root / GROUND_TRUTH, LAYOUT), ["image", *CLASSES, "UNK"], "ISIC ground truth"
    )
    meta = read_table(require_file(spec.name, root / METADATA, LAYOUT), ["image", "lesion_id"], "ISIC metadata")
    lesion = {row.get("image"): row.get("lesion_id", required=False) or None for row in meta}
    folder = image_folder(root)
    samples = []
    for row in truth:
        image = row.get("image")
        if row.number("UNK") != 0.0:
            raise row.error("UNK", "unknown label: UNK is not a training class of ISIC 2019")
        hot = [row.number(c) for c in CLASSES]
        bad = [c for c, v in zip(CLASSES, hot) if v not in (0.0, 1.0)]
        if bad:
            raise row.error(bad[0], f"unknown label {row.get(bad[0])!r}; one-hot columns hold 1.0 or 0.0")
        if sum(hot) != 1.0:
            raise row.error(None, f"needs exactly one 1.0 among {list(CLASSES)}, found {int(sum(hot))}")
        path = folder / f"{image}.jpg"
        samples.append(
            Sample(path, hot.index(1.0), f"{image}.jpg", lesion.get(image) or image, source=row.where("image"))
        )
    info = {"grouped_by": "lesion_id", "class_names": list(NAMES)}
    return build_dataset(spec.name, "multiclass", CLASSES, samples, opts, info)


@hookimpl
def register_datasets(register):
    """ISIC 2019."""
    register(
        DatasetSpec(
            name="isic/2019",
            load=load,
            task="multiclass",
            classes=CLASSES,
            splits={"train": None, "val": None, "test": None},
            primary_metric="balanced_accuracy",
            modality="dermoscopy",
            license=LICENSE,
            citation=CITATION,
            revision="1",
            options=file_dataset_options(),
            limits=file_dataset_limits(),
            description="ISIC 2019 training set: 25,331 dermoscopic images, 8 diagnoses "
            "(" + ", ".join(f"{c}={n}" for c, n in zip(CLASSES, NAMES)) + "); split grouped by lesion_id",
        )
    )
