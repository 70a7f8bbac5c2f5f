"""``hf/<task>/<hub id>``: any Hugging Face ``datasets`` image classification set.

Online, ``datasets.load_dataset(<hub id>, name=config, revision=revision)`` fetches it from
the hub (and caches it). Offline, set ``path``: a folder written by ``save_to_disk`` is read
with ``load_from_disk``; any other local folder (an image folder, parquet or CSV files) with
``load_dataset(path)``. Options: ``path``, ``config``, ``revision``, ``image_column``
(``image``), ``label_column`` (``label``: a ClassLabel, an integer, a string, or for
multi-label a list of ClassLabels/names), ``patient_column`` (optional grouping), ``classes``
(needed when the labels are plain integers without names), ``splits`` (a table mapping
train/val/test to the set's split names; default: train, validation|valid|val|dev, test),
plus ``split_seed``, ``split_dir``, ``split_file``, ``val_fraction``, ``test_fraction``,
``image_cache`` and ``max_side``. A missing val (or test) split is carved from train by
patient when ``patient_column`` is given, and recorded in a split file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfm.datasets import (
    PRIMARY,
    SPLIT_NAMES,
    CachedImages,
    Dataset,
    DatasetSpec,
    DecodeError,
    Split,
    UserError,
    assign_splits,
    check_classes,
    file_dataset_limits,
    file_dataset_options,
    hookimpl,
    option_list,
    parse_options,
    sha256_json,
    task_family,
)

TASKS = ("binary", "multiclass", "ordinal", "multilabel")
HF_OPTIONS = {
    "path": None,
    "config": None,
    "revision": None,
    "image_column": "image",
    "label_column": "label",
    "patient_column": None,
    "classes": None,
    "splits": None,
}
NOT_FOR_HUB = ("root", "on_error", "window", "frame", "slice_axis")


def hub_options() -> dict[str, Any]:
    """The options ``load`` takes, with their defaults: the common file-set ones that apply
    (not ``NOT_FOR_HUB``) plus ``HF_OPTIONS``."""
    return {k: v for k, v in file_dataset_options(HF_OPTIONS).items() if k not in NOT_FOR_HUB}


def hub_limits() -> dict[str, Any]:
    """Value limits of the options that apply."""
    return {k: v for k, v in file_dataset_limits().items() if k not in NOT_FOR_HUB}


DEFAULT_SPLITS = {"train": ("train",), "val": ("validation", "valid", "val", "dev"), "test": ("test",)}


class HubImages(CachedImages):
    """Images of one column of a ``datasets.Dataset``, as uint8 arrays, disk-cached by content fingerprint."""

    def __init__(
        self,
        table: Any,
        column: str,
        rows: Sequence[int],
        cache_dir: Path | None,
        max_side: int | None,
        fingerprint: str,
    ) -> None:
        self.table, self.column, self.rows = table, column, list(rows)
        self.cache_dir, self.max_side, self.fingerprint = cache_dir, max_side, fingerprint

    def __len__(self) -> int:
        return len(self.rows)

    def item_key(self, index: int) -> dict | None:
        """The split's ``datasets`` fingerprint, the column and the row."""
        return {"hf_fingerprint": self.fingerprint, "column": self.column, "row": self.rows[index]}

    def decode_item(self, index: int) -> np.ndarray:
        """The row's image (PIL, array or path) as uint8."""
        from PIL import Image

        value = self.table[self.rows[index]][self.column]
        try:
            if isinstance(value, (str, Path)):
                value = Image.open(value)
            if isinstance(value, Image.Image):
                value = value.convert("RGB") if value.mode not in ("L", "RGB") else value
            return np.array(value, dtype=np.uint8)
        except Exception as exc:
            raise DecodeError(f"cannot decode image of row {self.rows[index]} ({self.column!r}): {exc}") from None


def open_dataset(name: str, hub_id: str, extra: Mapping[str, Any]) -> Any:
    """Load the ``DatasetDict`` (or ``Dataset``) from the hub or a local path."""
    import datasets

    path = extra.get("path")
    try:
        if path:
            local = Path(path).expanduser()
            if not local.exists():
                raise UserError(
                    f"{name}: local path {local} does not exist; expected a folder written by "
                    "save_to_disk, or a folder of data files"
                )
            if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
                return datasets.load_from_disk(str(local))
            return datasets.load_dataset(str(local), name=extra.get("config"))
        return datasets.load_dataset(hub_id, name=extra.get("config"), revision=extra.get("revision"))
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"{name}: cannot load Hugging Face dataset {path or hub_id!r} ({type(exc).__name__}: "
            f"{first}); offline, set `path` to a local copy (save_to_disk folder or data files)"
        ) from None


def label_names(name: str, task: str, table: Any, column: str, given: list[str] | None) -> tuple[str, ...]:
    """Class names from the ClassLabel feature, the ``classes`` option or the string labels."""
    import datasets

    feature = table.features.get(column)
    if isinstance(feature, (datasets.Sequence, list)):
        feature = feature.feature if isinstance(feature, datasets.Sequence) else feature[0]
    if given:
        return check_classes(name, task, given)
    if isinstance(feature, datasets.ClassLabel):
        return check_classes(name, task, feature.names)
    values = table[column]
    flat = [v for vs in values for v in vs] if task == "multilabel" else list(values)
    if all(isinstance(v, str) for v in flat):
        return check_classes(name, task, sorted(set(flat)))
    raise UserError(f"{name}: column {column!r} holds integer labels without names; set `classes`")


def encode(name: str, task: str, values: Sequence[Any], classes: Sequence[str], column: str, split: str) -> np.ndarray:
    """Labels as class indices (N,) or multi-hot (N, C); bad values name the split, row and column."""

    def index(v: Any, row: int) -> int:
        if isinstance(v, str) and v in classes:
            return list(classes).index(v)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(classes):
            return int(v)
        raise UserError(
            f"{name}: split {split!r}, row {row}, column {column!r}: unknown label {v!r}; "
            f"expected one of {list(classes)}"
        )

    if task == "multilabel":
        out = np.zeros((len(values), len(classes)), dtype=np.int64)
        for r, vs in enumerate(values):
            if vs is None:
                raise UserError(f"{name}: split {split!r}, row {r}, column {column!r}: label is missing (None)")
            for v in vs:
                out[r, index(v, r)] = 1
        return out
    for r, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise UserError(f"{name}: split {split!r}, row {r}, column {column!r}: label is missing (NaN/None)")
    return np.asarray([index(v, r) for r, v in enumerate(values)], dtype=np.int64)


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Load, label and split the hub data set; see the module docstring."""
    hub_id = spec.name.split("/", 2)[2]
    unused = sorted(set(options) & set(NOT_FOR_HUB))
    if unused:
        raise UserError(
            f"{spec.name}: option {unused[0]!r} does not apply to Hugging Face data sets (use `path` for a local copy)"
        )
    opts = parse_options(spec.name, options, Path("."), HF_OPTIONS)
    extra = opts.extra
    loaded = open_dataset(spec.name, hub_id, extra)
    parts = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
    mapping = extra.get("splits") or {}
    if not isinstance(mapping, Mapping) or set(mapping) - set(SPLIT_NAMES):
        raise UserError(f"{spec.name}: `splits` must map train/val/test to split names, not {mapping!r}")
    chosen: dict[str, str] = {}
    for ours, candidates in DEFAULT_SPLITS.items():
        names = [mapping[ours]] if ours in mapping else [c for c in candidates if c in parts]
        if names:
            if names[0] not in parts:
                raise UserError(f"{spec.name}: no split {names[0]!r}; the data set has {sorted(parts)}")
            chosen[ours] = names[0]
    if "train" not in chosen:
        raise UserError(f"{spec.name}: no training split; the data set has {sorted(parts)} (set `splits`)")
    image_col, label_col, patient_col = extra["image_column"], extra["label_column"], extra["patient_column"]
    for theirs in chosen.values():
        missing = [c for c in (image_col, label_col, patient_col) if c and c not in parts[theirs].column_names]
        if missing:
            raise UserError(
                f"{spec.name}: split {theirs!r} has no column {missing[0]!r} "
                f"(it has {parts[theirs].column_names}); set image_column/label_column"
            )
    classes = label_names(
        spec.name, spec.task, parts[chosen["train"]], label_col, option_list(spec.name, "classes", extra["classes"])
    )
    rows: list[tuple[str, int]] = [(theirs, r) for ours, theirs in chosen.items() for r in range(len(parts[theirs]))]
    official = [ours for ours, theirs in chosen.items() for _ in range(len(parts[theirs]))]
    labels = np.concatenate(
        [
            encode(spec.name, spec.task, parts[theirs][label_col], classes, label_col, theirs)
            for theirs in chosen.values()
        ]
    )
    groups = None
    if patient_col:
        groups = np.asarray([str(g) for theirs in chosen.values() for g in parts[theirs][patient_col]], dtype=object)
    ids = [f"{s}/{r}" for s, r in rows]
    result = assign_splits(
        spec.name,
        ids,
        labels,
        groups,
        official,
        seed=opts.split_seed,
        val_fraction=opts.val_fraction,
        test_fraction=opts.test_fraction,
        split_dir=opts.split_dir,
        split_file=opts.split_file,
    )
    fingerprints = {theirs: getattr(parts[theirs], "_fingerprint", None) for theirs in chosen.values()}
    splits = {}
    for split in SPLIT_NAMES:
        idx = np.flatnonzero(result.names == split)
        by_source: dict[str, list[int]] = {}
        for i in idx:
            by_source.setdefault(rows[i][0], []).append(rows[i][1])
        sources = [
            HubImages(parts[s], image_col, rs, opts.image_cache, opts.max_side, str(fingerprints[s]))
            for s, rs in by_source.items()
        ]
        order = [i for s in by_source for i in idx if rows[i][0] == s]
        splits[split] = Split(
            split,
            _Concat(sources),
            labels[order],
            groups=groups[order].astype(str) if groups is not None else None,
            ids=[ids[i] for i in order],
        )
    fingerprint = sha256_json(
        {
            "hub": hub_id,
            "path": bool(extra.get("path")),
            "fingerprints": fingerprints,
            "rows": sorted(zip(result.names.tolist(), ids, labels.tolist())),
            "max_side": opts.max_side,
            "classes": list(classes),
        }
    )
    info = {
        "hub_id": hub_id,
        "path": extra.get("path"),
        "config": extra.get("config"),
        "revision": extra.get("revision"),
        "hf_splits": chosen,
        "hf_fingerprints": fingerprints,
        **result.info,
        "classes": list(classes),
        "image_cache": str(opts.image_cache) if opts.image_cache else None,
        "max_side": opts.max_side,
        "grouped_by": patient_col,
        "on_error": "fail",
        "skipped": 0,
    }
    return Dataset(spec.task, classes, splits, fingerprint, info)


class _Concat:
    """Several image sources read as one."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.sources[k][index - int(self.offsets[k])]


def make_spec(task: str, hub_id: str) -> DatasetSpec:
    """The spec of ``hf/<task>/<hub id>``."""
    return DatasetSpec(
        name=f"hf/{task}/{hub_id}",
        load=load,
        task=task,
        classes=(),
        splits={"train": None, "val": None, "test": None},
        primary_metric=PRIMARY[task],
        modality="any",
        license="see the dataset card",
        citation="see the dataset card",
        options=hub_options(),
        limits=hub_limits(),
        description=f"Hugging Face datasets image classification set {hub_id}, {task}",
    )


@hookimpl
def register_datasets(register):
    """The ``hf/`` family."""
    register(
        task_family(
            "hf/",
            TASKS,
            make_spec,
            "named hf/<task>/<hub id>: Hugging Face `datasets` image classification (option path for offline copies)",
            ["hf/multiclass/user/dataset", "hf/binary/org/name"],
        )
    )
