"""``csv/<task>/<name>``: images listed in a CSV manifest (path, label or labels, optional patient id).

A manifest looks like::

    path,label,patient_id,split
    images/a.png,pneumonia,P001,train
    images/b.png,normal,P002,

Options: ``csv_file`` (required), ``root`` (the folder paths are relative to; default the
CSV's folder), ``path_column`` (``path``), ``label_column`` (``label``: a class name or index;
for multi-label, names joined by ``label_separator``, default ``|``), ``label_columns`` (a
list of 0/1 columns, multi-label), ``patient_column`` (default ``patient_id`` when present:
splits are grouped by it), ``split_column`` (default ``split`` when present: train/val/test;
empty cells are split by medfm), ``classes`` (their order; default the sorted labels found, or
``label_columns``), plus the options common to file data sets (``medfm.filesets``). A missing
column, an empty/NaN label or an unknown label is an error naming the file, line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medfm import Dataset, DatasetSpec, UserError, hookimpl
from medfm.csvfiles import CsvRow, read_table
from medfm.filesets import LoadOptions, Sample, build_dataset, parse_options

from ._common import PRIMARY, check_classes, natural_key, option_list, row_label, split_name, task_family

TASKS = ("binary", "multiclass", "ordinal", "multilabel")
MANIFEST_OPTIONS = {"csv_file": None, "path_column": "path", "label_column": None, "label_columns": None,
                    "label_separator": "|", "patient_column": None, "split_column": None, "classes": None}


def label_columns_of(name: str, task: str, opts: LoadOptions,
                     default_label: str = "label") -> tuple[str | None, list[str] | None]:
    """The label column (one label or joined names) or the 0/1 label columns, from the options."""
    label_columns = option_list(name, "label_columns", opts.extra.get("label_columns"))
    if label_columns and task != "multilabel":
        raise UserError(f"{name}: label_columns is for multi-label data sets; use label_column for {task}")
    return (None, label_columns) if label_columns else (opts.extra.get("label_column") or default_label, None)


def classes_of(name: str, task: str, rows: Sequence[CsvRow], opts: LoadOptions, label_column: str | None,
               label_columns: Sequence[str] | None) -> tuple[str, ...]:
    """Class names: the ``classes`` option, the label columns, or the sorted labels found in the rows."""
    given = option_list(name, "classes", opts.extra.get("classes"))
    if given or label_columns:
        return check_classes(name, task, given or list(label_columns or ()))
    found: set[str] = set()
    sep = opts.extra.get("label_separator", "|")
    for row in rows:
        value = row.get(label_column or "label", required=task != "multilabel")
        if task == "multilabel":
            found.update(v.strip() for v in value.split(sep) if v.strip())
        else:
            found.add(value)
    return check_classes(name, task, sorted(found, key=natural_key))


def required_columns(opts: LoadOptions, label_column: str | None, label_columns: Sequence[str] | None,
                     key_column: str) -> list[str]:
    """Columns the manifest must have."""
    cols = [key_column] + ([label_column] if label_column else []) + list(label_columns or [])
    for key in ("patient_column", "split_column"):
        if opts.extra.get(key):
            cols.append(opts.extra[key])
    return cols


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the manifest; see the module docstring."""
    if not options.get("csv_file"):
        raise UserError(f"{spec.name}: the `csv_file` option is required (the manifest CSV)")
    csv_file = Path(options["csv_file"]).expanduser()
    opts = parse_options(spec.name, options, csv_file.parent, MANIFEST_OPTIONS)
    path_column = opts.extra["path_column"]
    label_column, label_columns = label_columns_of(spec.name, spec.task, opts)
    rows = read_table(csv_file, required_columns(opts, label_column, label_columns, path_column), "manifest")
    classes = classes_of(spec.name, spec.task, rows, opts, label_column, label_columns)
    patient_column = opts.extra["patient_column"] or ("patient_id" if rows and "patient_id" in rows[0].values else None)
    split_column = opts.extra["split_column"] or ("split" if rows and "split" in rows[0].values else None)
    samples = []
    for row in rows:
        rel = row.get(path_column)
        label = row_label(row, spec.task, classes, label_column, label_columns, opts.extra["label_separator"])
        samples.append(Sample(opts.root / rel, label, rel, row.get(patient_column) if patient_column else None,
                              split_name(row, split_column), source=row.where(path_column)))
    info = {"csv_file": str(csv_file), "grouped_by": patient_column}
    return build_dataset(spec.name, spec.task, classes, samples, opts, info)


def make_spec(task: str, name: str) -> DatasetSpec:
    """The spec of ``csv/<task>/<name>``."""
    return DatasetSpec(name=f"csv/{task}/{name}", load=load, task=task, classes=(),
                       splits={"train": None, "val": None, "test": None}, primary_metric=PRIMARY[task],
                       modality="any", license="the data's own", citation="the data's own",
                       description=f"CSV manifest (path, label(s), optional patient id), {task}")


@hookimpl
def register_datasets(register):
    """The ``csv/`` family."""
    register(task_family("csv/", TASKS, make_spec,
                         "named csv/<task>/<name>: CSV manifest with path, label or labels, optional patient_id "
                         "and split; "
                         "option csv_file",
                         ["csv/multilabel/my-cxr", "csv/binary/my-set"]))
