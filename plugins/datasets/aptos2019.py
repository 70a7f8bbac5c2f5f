"""``aptos/2019``: APTOS 2019 Blindness Detection (Kaggle), diabetic retinopathy grade 0-4, ordinal.

Layout (the competition download)::

    <root>/train.csv              columns id_code,diagnosis (0-4)
    <root>/train_images/<id_code>.png

Only the training images are labelled (the competition's test labels were never released),
so the split is seeded and stratified by grade (``test_fraction``, ``val_fraction``) and
written to a split file. No patient ids are published: the split is by image.
"""

from __future__ import annotations

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

GRADES = ("no DR", "mild", "moderate", "severe", "proliferative DR")
LAYOUT = "<root>/train.csv (id_code,diagnosis) and <root>/train_images/<id_code>.png"
CITATION = "APTOS 2019 Blindness Detection, Asia Pacific Tele-Ophthalmology Society, Kaggle competition (2019)"
LICENSE = "Kaggle competition rules: non-commercial research and education"


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read ``train.csv``; see the module docstring."""
    opts = parse_options(spec.name, options, default_data_root("aptos2019"))
    root = require_root(spec.name, opts.root, LAYOUT)
    labels_file = require_file(spec.name, root / "train.csv", LAYOUT)
    rows = read_table(labels_file, ["id_code", "diagnosis"], "APTOS labels file")
    samples = []
    for row in rows:
        code = row.get("id_code")
        grade = row.number("diagnosis")
        if not grade.is_integer() or not 0 <= grade <= 4:
            raise row.error("diagnosis", f"unknown label {row.get('diagnosis')!r}; grades are 0-4")
        samples.append(
            Sample(
                root / "train_images" / f"{code}.png",
                int(grade),
                f"train_images/{code}.png",
                source=row.where("id_code"),
            )
        )
    return build_dataset(spec.name, "ordinal", GRADES, samples, opts, {"grouped_by": None})


@hookimpl
def register_datasets(register):
    """APTOS 2019."""
    register(
        DatasetSpec(
            name="aptos/2019",
            load=load,
            task="ordinal",
            classes=GRADES,
            splits={"train": None, "val": None, "test": None},
            primary_metric="kappa",
            modality="fundus photograph",
            license=LICENSE,
            citation=CITATION,
            revision="1",
            options=file_dataset_options(),
            limits=file_dataset_limits(),
            description="APTOS 2019: 3,662 labelled fundus photographs, DR grade 0-4 (quadratic kappa)",
        )
    )
