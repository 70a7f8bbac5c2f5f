"""``csv/<task>/<name>``: images listed in a CSV manifest (path, label or labels, optional patient id).

A manifest looks like::

    path,label,patient_id,split
    images/a.png,pneumonia,P001,train
    images/b.png,normal,P002,

Options: ``csv_file`` (required), ``root`` (the folder paths are relative to; default the
CSV's folder), ``path_column`` (``path``), ``label_column`` (``label``: a class name or index;
for multi-label, names joined by ``label_separator``, default ``|``), ``label_columns`` (a
list of 0/1 columns, multi-label), ``patient_column`` (splits are grouped by it; default the
first column named ``patient_id``, ``patient``, ``PatientID``, ``patient id``, ``subject_id``
or ``subject``, in any case; ``false`` turns grouping off), ``split_column`` (default ``split``
when present: train/val/test; rows with an empty cell join the training pool), ``classes`` (their order;
default the sorted labels found, or ``label_columns``), plus the options common to file data
sets (``medfm.filesets``). A missing column, an empty/NaN label or an unknown label is an error
naming the file, line and column; so is an image listed on two rows (naming both lines).
Without a patient column a ``PatientGroupingWarning`` says that each image is its own patient.
See ``docs/datasets.md``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from medfm.datasets import (
    MANIFEST_OPTIONS,
    PRIMARY,
    Dataset,
    DatasetSpec,
    PatientGroupingWarning,
    Sample,
    UserError,
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
    patient_column_of,
    patient_option,
    read_table,
    required_columns,
    row_label,
    same_file_key,
    split_name,
    task_family,
    ungrouped_message,
)

TASKS = ("binary", "multiclass", "ordinal", "multilabel")


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the manifest; see the module docstring."""
    if not options.get("csv_file"):
        raise UserError(f"{spec.name}: the `csv_file` option is required (the manifest CSV)")
    csv_file = Path(options["csv_file"]).expanduser()
    opts = parse_options(spec.name, options, csv_file.parent, MANIFEST_OPTIONS)
    path_column = opts.extra["path_column"]
    label_column, label_columns = label_columns_of(spec.name, spec.task, opts)
    given_patient = patient_option(spec.name, opts.extra["patient_column"])
    rows = read_table(csv_file, required_columns(opts, label_column, label_columns, path_column), "manifest")
    classes = classes_of(spec.name, spec.task, rows, opts, label_column, label_columns)
    patient_column = patient_column_of(spec.name, rows, given_patient)
    split_column = opts.extra["split_column"] or ("split" if rows and "split" in rows[0].values else None)
    samples = []
    for row in rows:
        rel = row.get(path_column)
        label = row_label(row, spec.task, classes, label_column, label_columns, opts.extra["label_separator"])
        samples.append(
            Sample(
                opts.root / rel,
                label,
                rel,
                row.get(patient_column) if patient_column else None,
                split_name(row, split_column),
                source=row.where(path_column),
            )
        )
    check_unique_rows(
        spec.name,
        rows,
        path_column,
        [same_file_key(opts.root, s.id) for s in samples],
        [s.label for s in samples],
        [label_text(row, label_column, label_columns) for row in rows],
    )
    info: dict[str, Any] = {"csv_file": str(csv_file), "grouped_by": patient_column}
    if patient_column is None and given_patient is None and samples:
        info["warning"] = ungrouped_message(
            spec.name,
            len(samples),
            f"add a patient id column to {csv_file.name} (named patient_id, patient, PatientID, subject or "
            "subject_id) or name yours with the patient_column option; patient_column = false turns grouping "
            "off without this warning",
        )
        warnings.warn(info["warning"], PatientGroupingWarning, stacklevel=2)
    dataset = build_dataset(spec.name, spec.task, classes, samples, opts, info)
    dataset.info["groups"] = count_groups(dataset)
    return dataset


def make_spec(task: str, name: str) -> DatasetSpec:
    """The spec of ``csv/<task>/<name>``."""
    return DatasetSpec(
        name=f"csv/{task}/{name}",
        load=load,
        task=task,
        classes=(),
        splits={"train": None, "val": None, "test": None},
        primary_metric=PRIMARY[task],
        modality="any",
        license="the data's own",
        citation="the data's own",
        options=file_dataset_options(MANIFEST_OPTIONS),
        limits=file_dataset_limits(),
        description=f"CSV manifest (path, label(s), optional patient id), {task}",
    )


@hookimpl
def register_datasets(register):
    """The ``csv/`` family."""
    register(
        task_family(
            "csv/",
            TASKS,
            make_spec,
            "named csv/<task>/<name>: CSV manifest with path, label or labels, optional patient_id "
            "and split; "
            "option csv_file",
            ["csv/multilabel/my-cxr", "csv/binary/my-set"],
        )
    )
