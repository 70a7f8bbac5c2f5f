"""``sars-cov-2-ct``: the SARS-CoV-2 CT-scan data set (Soares et al. 2020), COVID vs non-COVID.

Layout (the Kaggle download)::

    <root>/COVID/Covid (1).png ...
    <root>/non-COVID/Non-Covid (1).png ...

No official split and no patient ids are published (the 2,482 slices come from 120 patients),
so the split is seeded and stratified by image and written to a split file; slices of one
patient can fall in two splits, which inflates results (recorded in ``dataset.info``).
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

CLASSES = ("non-COVID", "COVID")
LAYOUT = "<root>/COVID/*.png and <root>/non-COVID/*.png"
CITATION = (
    "Soares, E., Angelov, P., Biaso, S., Higa Froes, M. & Kanda Abe, D. SARS-CoV-2 CT-scan dataset: "
    "A large dataset of real patients CT scans for SARS-CoV-2 identification. medRxiv (2020), "
    "doi:10.1101/2020.04.24.20078584"
)
LICENSE = "CC BY-NC-SA 4.0"


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the two class folders; see the module docstring."""
    opts = parse_options(spec.name, options, default_data_root("sars-cov-2-ct"))
    root = require_root(spec.name, opts.root, LAYOUT)
    samples = []
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        if not folder.is_dir():
            raise UserError(f"{spec.name}: {folder} does not exist; expected layout: {LAYOUT}")
        samples += [Sample(f, label, relative_id(root, f), source=str(folder)) for f in list_images(folder)]
    info = {"grouped_by": None, "warning": "no patient ids published: slices of one patient may be in two splits"}
    return build_dataset(spec.name, "binary", CLASSES, samples, opts, info)


@hookimpl
def register_datasets(register):
    """SARS-CoV-2 CT-scan."""
    register(
        DatasetSpec(
            name="sars-cov-2-ct",
            load=load,
            task="binary",
            classes=CLASSES,
            splits={"train": None, "val": None, "test": None},
            primary_metric="auroc",
            modality="CT (2D slices)",
            license=LICENSE,
            citation=CITATION,
            revision="1",
            options=file_dataset_options(),
            limits=file_dataset_limits(),
            description="SARS-CoV-2 CT-scan: 1,252 COVID and 1,230 non-COVID slices; split by image (no patient ids)",
        )
    )
