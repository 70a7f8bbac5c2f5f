"""The data set plugin author's API: the spec, the loaded data set and the helpers.

A data set plugin implements ``register_datasets(register)`` and calls ``register`` with a
:class:`DatasetSpec` (or a :class:`DatasetFamily`). The spec's ``load(spec, **options)`` returns
a :class:`Dataset` of three :class:`Split` objects. For data on disk, :func:`build_dataset`
turns a list of :class:`Sample` (path, label, patient) into one, with patient-grouped seeded
splits where the data set has no official split, decoding and an on-disk image cache.
See ``docs/plugins.md`` for a complete example and the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exports import lazy_exports

if TYPE_CHECKING:
    from .csvfiles import CsvRow, read_list, read_table
    from .dataset import Dataset, Split, array_fingerprint
    from .dataset_helpers import (
        IMAGE_SUFFIXES,
        MANIFEST_OPTIONS,
        PATIENT_COLUMNS,
        PRIMARY,
        SPLIT_ALIASES,
        PatientGroupingWarning,
        check_classes,
        check_unique_rows,
        classes_of,
        compile_regex,
        count_groups,
        group_from_name,
        label_columns_of,
        label_text,
        list_images,
        natural_key,
        option_list,
        patient_column_of,
        patient_option,
        required_columns,
        row_label,
        same_file_key,
        split_name,
        task_family,
        ungrouped_message,
    )
    from .decode import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, DecodeError
    from .download import download, md5_file
    from .errors import UserError
    from .filesets import (
        LoadOptions,
        Sample,
        build_dataset,
        default_data_root,
        file_dataset_limits,
        file_dataset_options,
        parse_options,
        relative_id,
        require_file,
        require_root,
    )
    from .hookspecs import hookimpl
    from .image_cache import CachedImages
    from .io import sha256_file_memo, sha256_json
    from .option_checks import OptionLimit, at_least, between, fraction, greater_than, one_of
    from .specs import DatasetFamily, DatasetSpec, Family
    from .splits import SPLIT_NAMES, assign_splits

_WHERE = {
    "OptionLimit": "option_checks",
    "at_least": "option_checks",
    "greater_than": "option_checks",
    "between": "option_checks",
    "fraction": "option_checks",
    "one_of": "option_checks",
    "hookimpl": "hookspecs",
    "UserError": "errors",
    "DatasetSpec": "specs",
    "DatasetFamily": "specs",
    "Family": "specs",
    "Dataset": "dataset",
    "Split": "dataset",
    "array_fingerprint": "dataset",
    "Sample": "filesets",
    "LoadOptions": "filesets",
    "build_dataset": "filesets",
    "default_data_root": "filesets",
    "parse_options": "filesets",
    "relative_id": "filesets",
    "require_file": "filesets",
    "require_root": "filesets",
    "file_dataset_options": "filesets",
    "file_dataset_limits": "filesets",
    "CsvRow": "csvfiles",
    "read_table": "csvfiles",
    "read_list": "csvfiles",
    "DecodeError": "decode",
    "DICOM_SUFFIXES": "decode",
    "NIFTI_SUFFIXES": "decode",
    "PIL_SUFFIXES": "decode",
    "download": "download",
    "md5_file": "download",
    "CachedImages": "image_cache",
    "SPLIT_NAMES": "splits",
    "assign_splits": "splits",
    "sha256_file_memo": "io",
    "sha256_json": "io",
    "PRIMARY": "dataset_helpers",
    "SPLIT_ALIASES": "dataset_helpers",
    "IMAGE_SUFFIXES": "dataset_helpers",
    "natural_key": "dataset_helpers",
    "list_images": "dataset_helpers",
    "task_family": "dataset_helpers",
    "check_classes": "dataset_helpers",
    "row_label": "dataset_helpers",
    "split_name": "dataset_helpers",
    "option_list": "dataset_helpers",
    "group_from_name": "dataset_helpers",
    "compile_regex": "dataset_helpers",
    "PATIENT_COLUMNS": "dataset_helpers",
    "MANIFEST_OPTIONS": "dataset_helpers",
    "PatientGroupingWarning": "dataset_helpers",
    "ungrouped_message": "dataset_helpers",
    "count_groups": "dataset_helpers",
    "patient_option": "dataset_helpers",
    "patient_column_of": "dataset_helpers",
    "label_text": "dataset_helpers",
    "check_unique_rows": "dataset_helpers",
    "same_file_key": "dataset_helpers",
    "label_columns_of": "dataset_helpers",
    "classes_of": "dataset_helpers",
    "required_columns": "dataset_helpers",
}

__all__ = [
    "OptionLimit",
    "at_least",
    "greater_than",
    "between",
    "fraction",
    "one_of",
    "hookimpl",
    "UserError",
    "DatasetSpec",
    "DatasetFamily",
    "Family",
    "Dataset",
    "Split",
    "array_fingerprint",
    "Sample",
    "LoadOptions",
    "build_dataset",
    "default_data_root",
    "parse_options",
    "relative_id",
    "require_file",
    "require_root",
    "file_dataset_options",
    "file_dataset_limits",
    "CsvRow",
    "read_table",
    "read_list",
    "DecodeError",
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "download",
    "md5_file",
    "CachedImages",
    "SPLIT_NAMES",
    "assign_splits",
    "sha256_file_memo",
    "sha256_json",
    "PRIMARY",
    "SPLIT_ALIASES",
    "IMAGE_SUFFIXES",
    "natural_key",
    "list_images",
    "task_family",
    "check_classes",
    "row_label",
    "split_name",
    "option_list",
    "group_from_name",
    "compile_regex",
    "PATIENT_COLUMNS",
    "MANIFEST_OPTIONS",
    "PatientGroupingWarning",
    "ungrouped_message",
    "count_groups",
    "patient_option",
    "patient_column_of",
    "label_text",
    "check_unique_rows",
    "same_file_key",
    "label_columns_of",
    "classes_of",
    "required_columns",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
