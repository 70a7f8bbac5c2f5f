"""``brain-tumor-mri``: the Brain Tumor MRI data set (Nickparvar, Kaggle 2021), 4 classes.

Layout (the Kaggle download)::

    <root>/Training/{glioma,meningioma,notumor,pituitary}/Tr-gl_0010.jpg
    <root>/Testing/{glioma,meningioma,notumor,pituitary}/Te-gl_0010.jpg

The older folder names of its source set (``glioma_tumor``, ``meningioma_tumor``, ``no_tumor``,
``pituitary_tumor``) are accepted. ``Testing`` is the test split; validation is carved from
``Training`` (stratified, seeded, split file). No patient ids are published: by image.
"""

from __future__ import annotations

from typing import Any

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
    list_images,
    parse_options,
    relative_id,
    require_root,
)

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
ALIASES = {
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "notumor",
    "pituitary_tumor": "pituitary",
}
SPLITS = {"Training": "train", "Testing": "test"}
LAYOUT = "<root>/Training/<class>/*.jpg and <root>/Testing/<class>/*.jpg, classes " + ", ".join(CLASSES)
CITATION = "Nickparvar, M. Brain Tumor MRI Dataset. Kaggle (2021), doi:10.34740/KAGGLE/DSV/2645886"
LICENSE = "CC0 1.0"


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the two folders; see the module docstring."""
    opts = parse_options(spec.name, options, default_data_root("brain-tumor-mri"))
    root = require_root(spec.name, opts.root, LAYOUT)
    samples = []
    for folder, split in SPLITS.items():
        base = root / folder
        if not base.is_dir():
            raise UserError(f"{spec.name}: {base} does not exist; expected layout: {LAYOUT}")
        for d in sorted(x for x in base.iterdir() if x.is_dir() and not x.name.startswith(".")):
            cls = ALIASES.get(d.name, d.name)
            if cls not in CLASSES:
                raise UserError(f"{spec.name}: folder {d} is not a class; expected one of {list(CLASSES)}")
            samples += [
                Sample(f, CLASSES.index(cls), relative_id(root, f), None, split, source=str(d)) for f in list_images(d)
            ]
    return build_dataset(spec.name, "multiclass", CLASSES, samples, opts, {"grouped_by": None})


@hookimpl
def register_datasets(register):
    """Brain tumour MRI."""
    register(
        DatasetSpec(
            name="brain-tumor-mri",
            load=load,
            task="multiclass",
            classes=CLASSES,
            splits={"train": None, "val": None, "test": 1311},
            primary_metric="auroc",
            modality="brain MRI",
            license=LICENSE,
            citation=CITATION,
            revision="1",
            options=file_dataset_options(),
            limits=file_dataset_limits(),
            description="Brain Tumor MRI (Kaggle): 7,023 MRI slices, glioma/meningioma/no tumour/pituitary; "
            "official Testing folder as test",
        )
    )
