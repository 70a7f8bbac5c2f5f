"""``nih/chestx-ray14``: NIH ChestX-ray14 (Wang et al. 2017), 14 findings, multi-label, as published.

Layout (the NIH Box download, or Kaggle's ``nih-chest-xrays/data``)::

    <root>/Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv)
    <root>/train_val_list.txt
    <root>/test_list.txt
    <root>/images/00000001_000.png            (the images_NNN.tar.gz parts extracted)
      or <root>/images_001/images/00000001_000.png ... images_012/images/...

Labels come from ``Finding Labels`` (``|``-separated; ``No Finding`` is all zeros). The
official ``test_list.txt`` is the test split; validation is carved from ``train_val_list.txt``
by ``Patient ID`` (``val_fraction`` of its patients, seeded, written to a split file).
Images in neither list are left out and counted in ``dataset.info``.
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
    read_list,
    read_table,
    require_file,
    require_root,
)

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
LAYOUT = (
    "<root>/Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), <root>/train_val_list.txt, "
    "<root>/test_list.txt, <root>/images/*.png or <root>/images_0NN/images/*.png"
)
CITATION = (
    "Wang, X. et al. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised "
    "Classification and Localization of Common Thorax Diseases. CVPR 2017"
)
LICENSE = "CC0 1.0 (NIH Clinical Center; cite the paper and acknowledge the NIH CC)"


def image_index(root: Path) -> dict[str, Path]:
    """File name -> path for every PNG in ``images/`` and the ``images_0NN/images/`` parts."""
    index: dict[str, Path] = {}
    for folder in [root / "images", *sorted(root.glob("images_*/images")), *sorted(root.glob("images_*"))]:
        if folder.is_dir():
            for p in folder.glob("*.png"):
                index.setdefault(p.name, p)
    return index


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the labels CSV and the official lists; see the module docstring."""
    opts = parse_options(spec.name, options, default_data_root("nih-chestxray14"))
    root = require_root(spec.name, opts.root, LAYOUT)
    csv_path = next((root / n for n in CSV_NAMES if (root / n).is_file()), root / CSV_NAMES[0])
    require_file(spec.name, csv_path, LAYOUT)
    test = set(read_list(require_file(spec.name, root / "test_list.txt", LAYOUT), "test list"))
    train_val = set(read_list(require_file(spec.name, root / "train_val_list.txt", LAYOUT), "train/val list"))
    rows = read_table(csv_path, ["Image Index", "Finding Labels", "Patient ID"], "NIH labels file")
    files = image_index(root)
    samples, unlisted = [], 0
    for row in rows:
        name = row.get("Image Index")
        split = "test" if name in test else "train" if name in train_val else None
        if split is None:
            unlisted += 1
            continue
        findings = [f.strip() for f in row.get("Finding Labels").split("|")]
        unknown = [f for f in findings if f not in FINDINGS and f != "No Finding"]
        if unknown:
            raise row.error(
                "Finding Labels",
                f"unknown label {unknown[0]!r}; expected 'No Finding' or |-separated names from {list(FINDINGS)}",
            )
        label = tuple(int(f in findings) for f in FINDINGS)
        path = files.get(name, root / "images" / name)
        samples.append(Sample(path, label, name, row.get("Patient ID"), split, source=row.where("Image Index")))
    info = {"labels_file": csv_path.name, "unlisted_images": unlisted, "grouped_by": "Patient ID"}
    return build_dataset(spec.name, "multilabel", FINDINGS, samples, opts, info)


@hookimpl
def register_datasets(register):
    """NIH ChestX-ray14."""
    register(
        DatasetSpec(
            name="nih/chestx-ray14",
            load=load,
            task="multilabel",
            classes=FINDINGS,
            splits={"train": None, "val": None, "test": 25596},
            primary_metric="auroc",
            modality="chest X-ray",
            license=LICENSE,
            citation=CITATION,
            revision="v2020",
            options=file_dataset_options(),
            limits=file_dataset_limits(),
            description="NIH ChestX-ray14: 112,120 frontal radiographs, 14 findings; official test list, "
            "val by patient from train_val_list",
        )
    )
