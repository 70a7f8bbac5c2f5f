"""Helpers shared by the data set plugins: task-named families, label parsing, folder listing.

Generic data sets (``folder/``, ``csv/``, ``dicom/``, ``hf/``) are families whose member names
carry the task, because a ``DatasetSpec`` must declare its task when it is listed or planned,
before any option is read: ``folder/binary/kermany``, ``csv/multilabel/my-cxr``,
``hf/multiclass/<hub id>``. Class names are only known once the data is read; they are in
``dataset.info["classes"]`` of every record.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from medfm import DatasetFamily, DatasetSpec, UserError
from medfm.csvfiles import CsvRow
from medfm.decode import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES
from medfm.specs import Family

PRIMARY = {"binary": "auroc", "multiclass": "auroc", "multilabel": "auroc", "ordinal": "kappa"}
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
IMAGE_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``2`` before ``10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files skipped), in natural order."""
    found = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(folder).parts)
             and p.name.lower().endswith(tuple(suffixes))]
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def task_family(prefix: str, tasks: Sequence[str], make: Callable[[str, str], DatasetSpec],
                description: str, examples: Sequence[str]) -> Family:
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
        raise UserError(f"{name}: a binary data set needs exactly 2 classes, found {len(classes)}: {list(classes)} "
                        "(name it with task multiclass, or set `classes`)")
    if len(classes) < 2:
        raise UserError(f"{name}: found {len(classes)} class(es) {list(classes)}; at least 2 are needed")
    return classes


def row_label(row: CsvRow, task: str, classes: Sequence[str], label_column: str | None,
              label_columns: Sequence[str] | None, separator: str = "|") -> int | tuple[int, ...]:
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
    """The ``group_regex`` option compiled, or a user error naming it."""
    if value is None:
        return None
    try:
        return re.compile(str(value))
    except re.error as exc:
        raise UserError(f"{name}: group_regex {value!r} is not a valid regular expression: {exc}") from None


def spec_kwargs(task: str) -> Mapping[str, Any]:
    """Primary metric for a task."""
    return {"primary_metric": PRIMARY[task]}
