"""``dicom/<task>/<name>``: a folder of DICOM files plus a labels CSV.

The CSV matches files either by relative path (``key_column = "path"``, the default; any other
non-UID column name also holds relative paths) or by a
DICOM UID read from the file headers (``key_column = "SOPInstanceUID"``,
``"SeriesInstanceUID"`` or ``"StudyInstanceUID"``: every image of that series or study gets
the row's label). Splits are grouped by ``patient_column`` when given, else by each file's
``PatientID`` tag. Options: ``root`` (the DICOM folder, required), ``labels_file`` (default
``<root>/labels.csv``), ``key_column``, ``label_column`` / ``label_columns`` /
``label_separator`` / ``classes`` / ``split_column`` as for ``csv/``, ``patient_column``, plus
the options common to file data sets; ``window`` and ``frame`` control DICOM decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm import Dataset, DatasetSpec, hookimpl
from medfm.csvfiles import read_table
from medfm.filesets import Sample, build_dataset, parse_options, relative_id, require_root

from ._common import DICOM_SUFFIXES, PRIMARY, row_label, split_name, task_family
from .manifest import MANIFEST_OPTIONS, classes_of, label_columns_of, required_columns

TASKS = ("binary", "multiclass", "ordinal", "multilabel")
UID_KEYS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
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
    opts = parse_options(spec.name, options, None, {**MANIFEST_OPTIONS, "labels_file": None, "key_column": "path",
                                                    "csv_file": None})
    root = require_root(spec.name, opts.root, LAYOUT)
    labels_file = Path(opts.extra["labels_file"] or opts.extra["csv_file"] or root / "labels.csv").expanduser()
    key = opts.extra["key_column"]
    label_column, label_columns = label_columns_of(spec.name, spec.task, opts)
    rows = read_table(labels_file, required_columns(opts, label_column, label_columns, key), "labels CSV")
    classes = classes_of(spec.name, spec.task, rows, opts, label_column, label_columns)
    patient_column = opts.extra["patient_column"]
    headers = dicom_headers(root) if key in UID_KEYS or not patient_column else {}
    by_uid: dict[str, list[Path]] = {}
    if key in UID_KEYS:
        for path, tags in headers.items():
            by_uid.setdefault(tags[key], []).append(path)
    split_column = opts.extra["split_column"] or ("split" if rows and "split" in rows[0].values else None)
    samples = []
    for row in rows:
        value = row.get(key)
        if key in UID_KEYS:
            files = by_uid.get(value)
            if not files:
                raise row.error(key, f"no DICOM file under {root} has {key} {value!r}")
        else:
            files = [root / value]
        label = row_label(row, spec.task, classes, label_column, label_columns, opts.extra["label_separator"])
        for f in files:
            patient = row.get(patient_column) if patient_column else (headers.get(f, {}).get("PatientID") or None)
            samples.append(Sample(f, label, relative_id(root, f), patient, split_name(row, split_column),
                                  source=row.where(key)))
    info = {"labels_file": str(labels_file), "key_column": key,
            "grouped_by": patient_column or "DICOM PatientID"}
    return build_dataset(spec.name, spec.task, classes, samples, opts, info)


def make_spec(task: str, name: str) -> DatasetSpec:
    """The spec of ``dicom/<task>/<name>``."""
    return DatasetSpec(name=f"dicom/{task}/{name}", load=load, task=task, classes=(),
                       splits={"train": None, "val": None, "test": None}, primary_metric=PRIMARY[task],
                       modality="DICOM", license="the data's own", citation="the data's own",
                       description=f"DICOM folder with a labels CSV, {task}")


@hookimpl
def register_datasets(register):
    """The ``dicom/`` family."""
    register(task_family("dicom/", TASKS, make_spec,
                         "named dicom/<task>/<name>: DICOM folder + labels CSV (by path or SOP/Series/Study UID); "
                         "options root, labels_file",
                         ["dicom/binary/my-cohort"]))
