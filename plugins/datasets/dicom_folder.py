"""``dicom/<task>/<name>``: a folder of DICOM files plus a labels CSV.

The CSV matches files either by relative path (``key_column = "path"``, the default; any other
non-UID column name also holds relative paths) or by a
DICOM UID read from the file headers (``key_column = "SOPInstanceUID"``,
``"SeriesInstanceUID"`` or ``"StudyInstanceUID"``: every image of that series or study gets
the row's label). Splits are grouped by ``patient_column`` when given, else by each file's
``PatientID`` tag (``patient_column = false``: no grouping); when no file has a PatientID a
``PatientGroupingWarning`` says that each image is its own patient. Two rows with the same key
(path or UID) are an error naming both lines. Options: ``root`` (the DICOM folder, required),
``labels_file`` (default ``<root>/labels.csv``; ``csv_file`` is accepted as another name for it),
``key_column``, ``label_column`` / ``label_columns`` / ``label_separator`` / ``classes`` /
``split_column`` / ``path_column`` (unused) as for ``csv/``, ``patient_column``, plus the options
common to file data sets; ``window`` and ``frame`` control DICOM decoding. See ``docs/datasets.md``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from medfm.datasets import (
    DICOM_SUFFIXES,
    MANIFEST_OPTIONS,
    PRIMARY,
    Dataset,
    DatasetSpec,
    PatientGroupingWarning,
    Sample,
    build_dataset,
    check_unique_rows,
    classes_of,
    count_groups,
    file_dataset_limits,
    file_dataset_options,
    hookimpl,
    label_columns_of,
    label_text,
    parse_options,
    patient_option,
    read_table,
    relative_id,
    require_root,
    required_columns,
    row_label,
    same_file_key,
    split_name,
    task_family,
    ungrouped_message,
)

TASKS = ("binary", "multiclass", "ordinal", "multilabel")
UID_KEYS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
#: the options of its own, with their defaults (besides the common ones of file data sets)
EXTRA_OPTIONS = {**MANIFEST_OPTIONS, "labels_file": None, "key_column": "path", "csv_file": None}
LAYOUT = "<root>/**/*.dcm with <root>/labels.csv (columns path or a UID, label)"


def dicom_headers(root: Path) -> dict[Path, dict[str, str]]:
    """UIDs and PatientID of every DICOM file under ``root`` (headers only, no pixels)."""
    import pydicom

    out: dict[Path, dict[str, str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in DICOM_SUFFIXES and path.suffix:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", *UID_KEYS])
        except Exception:
            continue  # not DICOM
        out[path] = {k: str(ds.get(k, "")) for k in ("PatientID", *UID_KEYS)}
    return out


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Match the labels CSV to the DICOM files; see the module docstring."""
    opts = parse_options(spec.name, options, None, EXTRA_OPTIONS)
    root = require_root(spec.name, opts.root, LAYOUT)
    labels_file = Path(opts.extra["labels_file"] or opts.extra["csv_file"] or root / "labels.csv").expanduser()
    key = opts.extra["key_column"]
    label_column, label_columns = label_columns_of(spec.name, spec.task, opts)
    rows = read_table(labels_file, required_columns(opts, label_column, label_columns, key), "labels CSV")
    classes = classes_of(spec.name, spec.task, rows, opts, label_column, label_columns)
    given_patient = patient_option(spec.name, opts.extra["patient_column"])
    patient_column = given_patient if isinstance(given_patient, str) else None
    headers = dicom_headers(root) if key in UID_KEYS or given_patient is None else {}
    by_uid: dict[str, list[Path]] = {}
    if key in UID_KEYS:
        for path, tags in headers.items():
            by_uid.setdefault(tags[key], []).append(path)
    split_column = opts.extra["split_column"] or ("split" if rows and "split" in rows[0].values else None)
    samples = []
    row_labels = []
    for row in rows:
        value = row.get(key)
        if key in UID_KEYS:
            files = by_uid.get(value)
            if not files:
                raise row.error(key, f"no DICOM file under {root} has {key} {value!r}")
        else:
            files = [root / value]
        label = row_label(row, spec.task, classes, label_column, label_columns, opts.extra["label_separator"])
        row_labels.append(label)
        for f in files:
            patient = None
            if patient_column:
                patient = row.get(patient_column)
            elif given_patient is None:
                patient = headers.get(f, {}).get("PatientID") or None
            samples.append(
                Sample(f, label, relative_id(root, f), patient, split_name(row, split_column), source=row.where(key))
            )
    check_unique_rows(
        spec.name,
        rows,
        key,
        [row.get(key) if key in UID_KEYS else same_file_key(root, row.get(key)) for row in rows],
        row_labels,
        [label_text(row, label_column, label_columns) for row in rows],
    )
    grouped_by = patient_column
    if given_patient is None:
        grouped_by = "DICOM PatientID" if any(s.group is not None for s in samples) else None
    info: dict[str, Any] = {"labels_file": str(labels_file), "key_column": key, "grouped_by": grouped_by}
    if grouped_by is None and given_patient is None and samples:
        info["warning"] = ungrouped_message(
            spec.name,
            len(samples),
            "no file has a PatientID tag: add a patient id column to the labels CSV and name it with the "
            "patient_column option; patient_column = false turns grouping off without this warning",
        )
        warnings.warn(info["warning"], PatientGroupingWarning, stacklevel=2)
    dataset = build_dataset(spec.name, spec.task, classes, samples, opts, info)
    dataset.info["groups"] = count_groups(dataset)
    return dataset


def make_spec(task: str, name: str) -> DatasetSpec:
    """The spec of ``dicom/<task>/<name>``."""
    return DatasetSpec(
        name=f"dicom/{task}/{name}",
        load=load,
        task=task,
        classes=(),
        splits={"train": None, "val": None, "test": None},
        primary_metric=PRIMARY[task],
        modality="DICOM",
        license="the data's own",
        citation="the data's own",
        options=file_dataset_options(EXTRA_OPTIONS),
        limits=file_dataset_limits(),
        description=f"DICOM folder with a labels CSV, {task}",
    )


@hookimpl
def register_datasets(register):
    """The ``dicom/`` family."""
    register(
        task_family(
            "dicom/",
            TASKS,
            make_spec,
            "named dicom/<task>/<name>: DICOM folder + labels CSV (by path or SOP/Series/Study UID); "
            "options root, labels_file",
            ["dicom/binary/my-cohort"],
        )
    )
