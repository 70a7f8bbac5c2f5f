"""From a list of image files with labels to a ``Dataset``: checks, splits, fingerprint, cache.

Data set plugins that read files (NIH, CheXpert, ISIC, the generic folder and CSV sets...)
parse their publisher's layout into ``Sample`` rows and call ``build_dataset``, which

- checks that every file exists and, with ``on_error = "skip"``, decodes every image once
  (filling the image cache) to leave out unreadable ones; the policy and the count skipped
  go into ``dataset.info``. With ``on_error = "fail"`` (the default) a missing file fails the
  load and an unreadable one fails at decoding, each naming the file;
- assigns splits with ``medfm.splits.assign_splits`` (official, or generated and written to a
  split file) and fails on an empty split or a patient in two splits;
- fingerprints the data as the sha256 of the sorted (split, relative path, size, label) list
  plus the decode settings, so a result says exactly which data it used;
- serves images through ``FileImages``: decoded once, shrunk, cached on disk.

Options common to every file-based data set (``COMMON_OPTIONS``): ``root``, ``on_error``,
``split_seed``, ``split_file``, ``split_dir``, ``val_fraction``, ``test_fraction``,
``image_cache`` (a folder, or ``false`` for none), ``max_side`` (shorter side of cached
images, 0 keeps full size), ``window``, ``frame`` and ``slice_axis`` (see ``medfm.decode``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .dataset import Dataset, ImageSource, Split
from .decode import DecodeOptions, decode_options_from
from .errors import UserError
from .image_cache import DEFAULT_MAX_SIDE, FileImages, default_cache_root
from .io import sha256_json
from .splits import SPLIT_NAMES, assign_splits

COMMON_OPTIONS = (
    "root",
    "on_error",
    "split_seed",
    "split_file",
    "split_dir",
    "val_fraction",
    "test_fraction",
    "image_cache",
    "max_side",
    "window",
    "frame",
    "slice_axis",
)
ON_ERROR = ("fail", "skip")
MAX_LISTED = 20


def file_dataset_options(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options of a file-based data set, each with its default, for ``DatasetSpec.options``:
    the common ones (``COMMON_OPTIONS``) plus the plugin's own ``extra`` (the mapping it passes to
    :func:`parse_options`). Declared, they are checked by name and type before any cell runs.
    ``None`` marks an option whose type varies (a path, or ``false`` for none)."""
    common = {
        "root": None,
        "on_error": "fail",
        "split_seed": 0,
        "split_file": None,
        "split_dir": None,
        "val_fraction": 0.1,
        "test_fraction": 0.2,
        "image_cache": None,
        "max_side": DEFAULT_MAX_SIDE,
        "window": None,
        "frame": None,
        "slice_axis": None,
    }
    assert set(common) == set(COMMON_OPTIONS)
    return {**common, **dict(extra or {})}


def file_dataset_limits() -> dict[str, Any]:
    """Value limits of the common file-based options, for ``DatasetSpec.limits``."""
    from .option_checks import at_least, fraction, one_of

    return {"on_error": one_of(*ON_ERROR), "val_fraction": fraction(), "test_fraction": fraction(),
            "max_side": at_least(0)}  # fmt: skip


def default_data_root(folder: str) -> Path:
    """``$MEDFM_DATA/<folder>``, or ``~/.medfm/data/<folder>``."""
    return Path(os.environ.get("MEDFM_DATA", Path.home() / ".medfm" / "data")) / folder


@dataclass
class Sample:
    """One image: its file, label (class index or 0/1 tuple), stable id and where it came from."""

    path: Path
    label: int | tuple[int, ...]
    id: str
    group: str | None = None
    split: str | None = None
    source: str = ""
    extra: Any = None


@dataclass
class LoadOptions:
    """Parsed options of a file-based data set (common ones plus the plugin's own in ``extra``)."""

    root: Path
    on_error: str = "fail"
    split_seed: int = 0
    split_file: Path | None = None
    split_dir: Path | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    image_cache: Path | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    extra: dict[str, Any] = field(default_factory=dict)


def parse_options(
    name: str, options: Mapping[str, Any], default_root: Path | None, extra: Mapping[str, Any] | None = None
) -> LoadOptions:
    """Validate options: unknown keys and bad values are user errors naming the data set."""
    extra = dict(extra or {})
    allowed = set(COMMON_OPTIONS) | set(extra)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UserError(f"{name}: unknown option {unknown[0]!r}; options are {sorted(allowed)}")
    root = options.get("root", default_root)
    if root is None or root == "":
        raise UserError(f"{name}: the `root` option is required (the folder holding the data set)")
    on_error = options.get("on_error", "fail")
    if on_error not in ON_ERROR:
        raise UserError(f"{name}: on_error must be one of {ON_ERROR}, not {on_error!r}")
    cache_root = default_cache_root()
    image_cache = options.get("image_cache", True)
    if image_cache is True:
        image_cache = cache_root / "images"
    max_side = options.get("max_side", DEFAULT_MAX_SIDE)
    if not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 0:
        raise UserError(f"{name}: max_side must be a whole number of pixels (0 keeps full size), not {max_side!r}")
    fractions = {k: options.get(k, d) for k, d in (("val_fraction", 0.1), ("test_fraction", 0.2))}
    for k, v in fractions.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
            raise UserError(f"{name}: {k} must be a number between 0 and 1, not {v!r}")
    seed = options.get("split_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{name}: split_seed must be an integer, not {seed!r}")
    for k, v in options.items():
        if k in extra:
            extra[k] = v
    split_file = options.get("split_file")
    return LoadOptions(
        root=Path(root).expanduser(),
        on_error=on_error,
        split_seed=seed,
        split_file=Path(split_file).expanduser() if split_file else None,
        split_dir=Path(options.get("split_dir") or cache_root / "splits").expanduser(),
        val_fraction=float(fractions["val_fraction"]),
        test_fraction=float(fractions["test_fraction"]),
        image_cache=Path(image_cache).expanduser() if image_cache else None,
        max_side=max_side or None,
        decode=decode_options_from(options),
        extra=extra,
    )


def require_root(name: str, root: Path, layout: str) -> Path:
    """The data folder, or one user error line showing the expected layout."""
    if root.is_file():
        raise UserError(f"{name}: `root` must be the data folder, not the file {root}; expected layout: {layout}")
    if not root.is_dir():
        raise UserError(f"{name}: data folder {root} does not exist; expected layout: {layout} (set the `root` option)")
    return root


def require_file(name: str, path: Path, layout: str) -> Path:
    """A file the layout needs, or one user error line naming it and the layout."""
    if not path.is_file():
        raise UserError(f"{name}: {path} does not exist; expected layout: {layout}")
    return path


def build_dataset(
    name: str,
    task: str,
    classes: Sequence[str],
    samples: Sequence[Sample],
    opts: LoadOptions,
    info: Mapping[str, Any] | None = None,
    masks: Callable[[list[Sample]], ImageSource] | None = None,
) -> Dataset:
    """Check files, apply ``on_error``, assign splits, fingerprint, and build the ``Dataset``."""
    if not samples:
        raise UserError(f"{name}: no images found under {opts.root}; check the `root` option and the layout")
    sizes: list[int] = []
    mtimes: list[int] = []
    kept: list[Sample] = []
    missing: list[Sample] = []
    for s in samples:
        try:
            stat = s.path.stat()
        except OSError:
            missing.append(s)
            continue
        sizes.append(stat.st_size)
        mtimes.append(stat.st_mtime_ns)
        kept.append(s)
    if missing and opts.on_error == "fail":
        first = missing[0]
        where = f" (listed in {first.source})" if first.source else ""
        raise UserError(
            f"{name}: {len(missing)} of {len(samples)} image file(s) are missing, e.g. "
            f'{first.path}{where}; restore them or set on_error = "skip" to leave them out'
        )
    skipped = [{"id": s.id, "file": str(s.path), "reason": "missing"} for s in missing]
    images = FileImages([s.path for s in kept], opts.decode, opts.image_cache, opts.max_side)
    if opts.on_error == "skip":
        bad = images.find_unreadable()
        if bad:
            skipped += [
                {"id": kept[i].id, "file": str(kept[i].path), "reason": reason} for i, reason in sorted(bad.items())
            ]
            keep = [i for i in range(len(kept)) if i not in bad]
            kept, sizes, images = [kept[i] for i in keep], [sizes[i] for i in keep], images.subset(keep)
            mtimes = [mtimes[i] for i in keep]
    if not kept:
        raise UserError(f"{name}: every image was skipped ({len(skipped)}), e.g. {skipped[0]['file']}")
    labels = np.asarray([s.label for s in kept], dtype=np.int64)
    has_groups = any(s.group is not None for s in kept)
    groups = np.asarray([s.group if s.group is not None else s.id for s in kept], dtype=object)
    ids = [s.id for s in kept]
    result = assign_splits(
        name,
        ids,
        labels,
        groups if has_groups else None,
        [s.split for s in kept],
        seed=opts.split_seed,
        val_fraction=opts.val_fraction,
        test_fraction=opts.test_fraction,
        split_dir=opts.split_dir,
        split_file=opts.split_file,
        tolerate_unknown=[s["id"] for s in skipped],
    )
    rows = sorted(zip(result.names.tolist(), ids, sizes, [np.atleast_1d(y).tolist() for y in labels]))
    fingerprint = sha256_json(
        {
            "files": rows,
            "decode": opts.decode.as_dict(),
            "max_side": opts.max_side,
            "task": task,
            "classes": list(classes),
        }
    )
    splits: dict[str, Split] = {}
    for split in SPLIT_NAMES:
        idx = np.flatnonzero(result.names == split)
        members = [kept[i] for i in idx]
        splits[split] = Split(
            split,
            images.subset(idx.tolist()),
            labels[idx],
            groups=groups[idx].astype(str) if has_groups else None,
            ids=[ids[i] for i in idx],
            masks=masks(members) if masks else None,
        )
    record: dict[str, Any] = {
        "root": str(opts.root),
        **result.info,
        "on_error": opts.on_error,
        "skipped": len(skipped),
        "skipped_files": skipped[:MAX_LISTED],
        "grouped_by": info.get("grouped_by") if info else None,
        "image_cache": str(opts.image_cache) if opts.image_cache else None,
        "max_side": opts.max_side,
        "decode": opts.decode.as_dict(),
        "classes": list(classes),
        "files": len(kept),
        # what is on disk now, for "is this record still current" on this machine: not part of
        # the fingerprint, which must be the same for the same data on every machine
        "disk_state": sha256_json(sorted(zip(ids, sizes, mtimes))),
    }
    record.update({k: v for k, v in (info or {}).items()})
    return Dataset(task, classes, splits, fingerprint, info=record)


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def relative_id(root: Path, path: Path) -> str:
    """A sample id: the path relative to the data root, with forward slashes."""
    return _rel(root, path)
