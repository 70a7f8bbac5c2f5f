"""Helpers for data set plugins: task-named families, label parsing, folder listing.

Public through :mod:`medfm.datasets`.

Generic data sets (``folder/``, ``csv/``, ``dicom/``, ``hf/``) are families whose member names
carry the task, because a ``DatasetSpec`` must declare its task when it is listed or planned,
before any option is read: ``folder/binary/kermany``, ``csv/multilabel/my-cxr``,
``hf/multiclass/<hub id>``. Class names are only known once the data is read: the spec has
none, and the record of a cell that ran has them in ``dataset.classes`` and
``dataset.info["classes"]``. See ``docs/datasets.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .csvfiles import CsvRow
from .decode import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES
from .errors import UserError
from .specs import DatasetFamily, DatasetSpec, Family

if TYPE_CHECKING:
    from .dataset import Dataset
    from .filesets import LoadOptions

PRIMARY = {"binary": "auroc", "multiclass": "auroc", "multilabel": "auroc", "ordinal": "kappa"}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``2`` before ``10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files skipped), in natural order."""
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name.lower().endswith(tuple(suffixes))
    ]
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def task_family(
    prefix: str,
    tasks: Sequence[str],
    make: Callable[[str, str], DatasetSpec],
    description: str,
    examples: Sequence[str],
) -> Family:
    """A family ``<prefix><task>/<name>``; ``make(task, name)`` builds the member's spec."""

    def resolve(suffix: str) -> DatasetSpec:
        task, _, name = suffix.partition("/")
        if task not in tasks or not name:
            raise KeyError(f"{prefix} names are {prefix}<task>/<name> with task one of {list(tasks)}")
        return make(task, name)

    return DatasetFamily(prefix, resolve, description=description, examples=tuple(examples))


def check_classes(name: str, task: str, classes: Sequence[str]) -> tuple[str, ...]:
    """Class names valid for the task (binary needs exactly two, the others at least two)."""
    classes = tuple(str(c) for c in classes)
    if len(set(classes)) != len(classes):
        raise UserError(f"{name}: class names {list(classes)} repeat")
    if task == "binary" and len(classes) != 2:
        raise UserError(
            f"{name}: a binary data set needs exactly 2 classes, found {len(classes)}: {list(classes)} "
            "(name it with task multiclass, or set `classes`)"
        )
    if len(classes) < 2:
        raise UserError(f"{name}: found {len(classes)} class(es) {list(classes)}; at least 2 are needed")
    return classes


def row_label(
    row: CsvRow,
    task: str,
    classes: Sequence[str],
    label_column: str | None,
    label_columns: Sequence[str] | None,
    separator: str = "|",
) -> int | tuple[int, ...]:
    """A label from a CSV row: one class (name or index), ``sep``-joined names, or 0/1 columns."""
    if task == "multilabel":
        if label_columns:
            out = []
            for col in label_columns:
                v = row.number(col)
                if v not in (0.0, 1.0):
                    raise row.error(col, f"unknown label {row.get(col)!r}; multi-label columns hold 0 or 1")
                out.append(int(v))
            return tuple(out)
        names = [n.strip() for n in row.get(label_column or "labels", required=False).split(separator) if n.strip()]
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise row.error(label_column, f"unknown label {unknown[0]!r}; expected names from {list(classes)}")
        return tuple(int(c in names) for c in classes)
    return row.label(label_column or "label", classes)


def split_name(row: CsvRow, column: str | None) -> str | None:
    """The official split of a row from its split column (train/val/test and common aliases)."""
    if not column or column not in row.values:
        return None
    value = row.get(column, required=False)
    if not value:
        return None
    if value.lower() not in SPLIT_ALIASES:
        raise row.error(column, f"unknown split {value!r}; use train, val or test")
    return SPLIT_ALIASES[value.lower()]


def option_list(name: str, key: str, value: Any) -> list[str] | None:
    """An optional list-of-strings option."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(isinstance(v, (str, int)) for v in value):
        raise UserError(f"{name}: option {key!r} must be a list of names, not {value!r}")
    return [str(v) for v in value]


def group_from_name(pattern: re.Pattern[str] | None, text: str) -> str | None:
    """The patient id captured from a file name by ``group_regex`` (first group, or whole match)."""
    if pattern is None:
        return None
    m = pattern.search(text)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def compile_regex(name: str, value: Any) -> re.Pattern[str] | None:
    """The ``group_regex`` option compiled (``None``, ``false`` or ``""``: none), or a user error naming it."""
    if value is None or value is False or value == "":
        return None
    if not isinstance(value, str):
        raise UserError(f"{name}: group_regex must be a regular expression (text) or false, not {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise UserError(f"{name}: group_regex {value!r} is not a valid regular expression: {exc}") from None


# ------------------------------------------------------------ patient grouping and manifests
#: column names taken as the patient id when ``patient_column`` is not given (compared in lower case)
PATIENT_COLUMNS = ("patient_id", "patient", "patientid", "patient id", "subject_id", "subject")


class PatientGroupingWarning(UserWarning):
    """A file data set split without (or with only partial) patient grouping; the message says how to fix it."""


def ungrouped_message(name: str, n_images: int, how: str) -> str:
    """The one-line warning for a data set whose splits are not grouped by patient."""
    return (
        f"{name}: no patient ids found, so each of the {n_images} images is treated as its own patient "
        f"and images of one patient can end up in two splits; {how}"
    )


def count_groups(dataset: Dataset) -> int:
    """How many patients/groups the splits were made over (each image counts as one when ungrouped)."""
    total = 0
    seen: set[str] = set()
    for name in dataset.split_names:
        split = dataset.split(name)
        if split.groups is None:
            total += len(split)
        else:
            seen.update(str(g) for g in split.groups)
    return total + len(seen)


def patient_option(name: str, value: Any) -> str | bool | None:
    """The ``patient_column`` option checked: a column name, ``False`` (grouping off) or ``None`` (default)."""
    if value is None or isinstance(value, str) and value:
        return value
    if value is False or value == "":
        return False
    raise UserError(f"{name}: patient_column must be a column name or false, not {value!r}")


def patient_column_of(name: str, rows: Sequence[CsvRow], value: Any) -> str | None:
    """The patient column: the option (``false``/``""``: none), else the first of ``PATIENT_COLUMNS`` present."""
    value = patient_option(name, value)
    if value is False:
        return None
    if isinstance(value, str):
        return value
    header: dict[str, str] = {}
    for column in rows[0].values if rows else ():
        if isinstance(column, str):
            header.setdefault(column.strip().lower(), column)
    return next((header[c] for c in PATIENT_COLUMNS if c in header), None)


def label_text(row: CsvRow, label_column: str | None, label_columns: Sequence[str] | None) -> str:
    """A row's label cell(s) as written, for messages."""
    if label_columns:
        return "{" + ", ".join(f"{c}: {row.get(c, required=False)}" for c in label_columns) + "}"
    return row.get(label_column or "label", required=False) or "(empty)"


def check_unique_rows(
    name: str,
    rows: Sequence[CsvRow],
    column: str,
    keys: Sequence[str],
    labels: Sequence[Any],
    label_texts: Sequence[str],
) -> None:
    """A user error when two rows name the same image (``keys``: one normalised key per row)."""
    first: dict[str, int] = {}
    found: tuple[int, int] | None = None
    repeats = 0
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j != i:
            repeats += 1
            found = found or (j, i)
    if found is None:
        return
    j, i = found
    a, b = rows[j], rows[i]
    shown = a.get(column, required=False)
    if b.get(column, required=False) != shown:
        shown += f" (as {b.get(column, required=False)} on line {b.line})"
    if labels[j] != labels[i]:
        what = (
            f"with different labels ({label_texts[j]} and {label_texts[i]}); an image must be listed once: "
            "keep the row with the right label and remove the other"
        )
    else:
        what = f"with the same label ({label_texts[j]}); an image must be listed once: remove one of the two rows"
    more = f" ({repeats} rows repeat an earlier row's image in all)" if repeats > 1 else ""
    raise UserError(f"{name}: {a.path} lists {shown} on lines {a.line} and {b.line} {what}{more}")


def same_file_key(root: Path, value: str) -> str:
    """A key under which two spellings of one file path (``./a.png``, ``a.png``) are equal."""
    return os.path.normpath(str(root / value))


def label_columns_of(
    name: str, task: str, opts: LoadOptions, default_label: str = "label"
) -> tuple[str | None, list[str] | None]:
    """The label column (one label or joined names) or the 0/1 label columns, from the options."""
    label_columns = option_list(name, "label_columns", opts.extra.get("label_columns"))
    if label_columns and task != "multilabel":
        raise UserError(f"{name}: label_columns is for multi-label data sets; use label_column for {task}")
    return (None, label_columns) if label_columns else (opts.extra.get("label_column") or default_label, None)


def classes_of(
    name: str,
    task: str,
    rows: Sequence[CsvRow],
    opts: LoadOptions,
    label_column: str | None,
    label_columns: Sequence[str] | None,
) -> tuple[str, ...]:
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


def required_columns(
    opts: LoadOptions, label_column: str | None, label_columns: Sequence[str] | None, key_column: str
) -> list[str]:
    """Columns the manifest must have."""
    cols = [key_column] + ([label_column] if label_column else []) + list(label_columns or [])
    for key in ("patient_column", "split_column"):
        if opts.extra.get(key):
            cols.append(opts.extra[key])
    return cols


#: the options of a CSV manifest (``csv/``, and ``dicom/`` with a manifest), with their defaults
MANIFEST_OPTIONS = {
    "csv_file": None,
    "path_column": "path",
    "label_column": None,
    "label_columns": None,
    "label_separator": "|",
    "patient_column": None,
    "split_column": None,
    "classes": None,
}
