"""CheXpert (Irvin et al. 2019), full and small editions, read from ``train.csv`` and ``valid.csv``.

Layout (as unzipped from the Stanford AIMI download)::

    <root>/train.csv, <root>/valid.csv        root = CheXpert-v1.0-small (or CheXpert-v1.0)
    <root>/train/patient00001/study1/view1_frontal.jpg
    <root>/valid/patient64541/study1/view1_frontal.jpg

CSV columns: ``Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices`` with
1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned = negative). The
``Path`` values start with the edition's folder name, which is stripped.

Specs: ``chexpert/small`` and ``chexpert/full`` use the 5 competition labels (Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion); ``chexpert/small-14`` and
``chexpert/full-14`` all 14 observations. Options: ``uncertain`` = ``"ones"`` (U-Ones, the
default), ``"zeros"`` (U-Zeros) or ``"ignore"`` (images with an uncertain selected label are
left out and counted), ``frontal_only`` (default true). The official ``valid.csv`` (radiologist
consensus) is the test split; validation is carved from ``train.csv`` by patient.
"""

from __future__ import annotations

from typing import Any

from medfm.datasets import (
    CsvRow,
    Dataset,
    DatasetSpec,
    Sample,
    UserError,
    build_dataset,
    default_data_root,
    file_dataset_limits,
    file_dataset_options,
    hookimpl,
    one_of,
    parse_options,
    read_table,
    require_file,
    require_root,
)

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
EDITIONS = {"small": "CheXpert-v1.0-small", "full": "CheXpert-v1.0"}
POLICIES = ("ones", "zeros", "ignore")
#: the options of its own, with their defaults (besides the common ones of file data sets)
EXTRA_OPTIONS = {"uncertain": "ones", "frontal_only": True}
CITATION = (
    "Irvin, J. et al. CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert "
    "Comparison. AAAI 2019"
)
LICENSE = "Stanford University School of Medicine CheXpert Dataset Research Use Agreement (non-commercial)"


def layout(folder: str) -> str:
    """The expected layout, for error messages."""
    return (
        f"<root>/train.csv, <root>/valid.csv and <root>/train/patientNNNNN/studyN/viewN_frontal.jpg "
        f"(root = the {folder} folder)"
    )


def row_labels(row: CsvRow, classes: tuple[str, ...], policy: str) -> tuple[int, ...] | None:
    """0/1 labels under the uncertainty policy; ``None`` when ``ignore`` drops the row."""
    out = []
    for column in classes:
        value = row.get(column, required=False)
        if value == "":
            out.append(0)
            continue
        number = row.number(column)
        if number not in (1.0, 0.0, -1.0):
            raise row.error(column, f"unknown label {value!r}; CheXpert labels are 1.0, 0.0, -1.0 or blank")
        if number == -1.0:
            if policy == "ignore":
                return None
            number = 1.0 if policy == "ones" else 0.0
        out.append(int(number))
    return tuple(out)


def make_load(edition: str, classes: tuple[str, ...]):
    """The loader of one edition and label set."""
    folder = EDITIONS[edition]

    def load(spec: DatasetSpec, **options: Any) -> Dataset:
        opts = parse_options(spec.name, options, default_data_root("chexpert") / folder, EXTRA_OPTIONS)
        policy, frontal_only = opts.extra["uncertain"], opts.extra["frontal_only"]
        if policy not in POLICIES:
            raise UserError(f"{spec.name}: uncertain must be one of {POLICIES}, not {policy!r}")
        if not isinstance(frontal_only, bool):
            raise UserError(f"{spec.name}: frontal_only must be true or false, not {frontal_only!r}")
        root = require_root(spec.name, opts.root, layout(folder))
        samples, dropped_uncertain, lateral = [], 0, 0
        for csv_name, split in (("train.csv", "train"), ("valid.csv", "test")):
            path = require_file(spec.name, root / csv_name, layout(folder))
            for row in read_table(path, ["Path", "Frontal/Lateral", *classes], "CheXpert labels file"):
                if frontal_only and row.get("Frontal/Lateral") != "Frontal":
                    lateral += 1
                    continue
                labels = row_labels(row, classes, policy)
                if labels is None:
                    dropped_uncertain += 1
                    continue
                rel = row.get("Path")
                parts = rel.split("/")
                if parts[0].startswith("CheXpert-v1.0"):
                    parts = parts[1:]
                rel = "/".join(parts)
                patient = parts[1] if len(parts) > 2 else rel
                samples.append(Sample(root / rel, labels, rel, patient, split, source=row.where("Path")))
        info = {
            "uncertain": policy,
            "frontal_only": frontal_only,
            "left_out_uncertain": dropped_uncertain,
            "left_out_lateral": lateral,
            "grouped_by": "patient folder",
            "edition": folder,
        }
        return build_dataset(spec.name, "multilabel", classes, samples, opts, info)

    return load


@hookimpl
def register_datasets(register):
    """CheXpert small and full, competition labels and all 14 observations."""
    for edition, folder in EDITIONS.items():
        for suffix, classes in (("", COMPETITION), ("-14", OBSERVATIONS)):
            register(
                DatasetSpec(
                    name=f"chexpert/{edition}{suffix}",
                    load=make_load(edition, classes),
                    task="multilabel",
                    classes=classes,
                    splits={"train": None, "val": None, "test": None},
                    primary_metric="auroc",
                    modality="chest X-ray",
                    license=LICENSE,
                    citation=CITATION,
                    revision="v1.0",
                    options=file_dataset_options(EXTRA_OPTIONS),
                    limits={**file_dataset_limits(), "uncertain": one_of(*POLICIES)},
                    description=f"{folder}, {len(classes)} labels, U-Ones by default, frontal only by default; "
                    "official valid.csv as test, val by patient from train.csv",
                )
            )
