"""``folder/<task>/<name>``: any folder with one sub-folder per class, optionally inside split folders.

Layouts (the Kermany chest X-ray and most Kaggle sets look like this)::

    <root>/<class>/<image>                      -> seeded, stratified split (written to a split file)
    <root>/{train,val,test}/<class>/<image>     -> the split folders as given
    <root>/{train,test}/<class>/<image>         -> val carved from train

``task`` is binary, multiclass or ordinal. Options: ``root`` (required), ``classes`` (the
order of the class folders; default: natural sort, so the second of two is the positive
class), ``group_regex`` (captures a patient id from the relative path, e.g.
``"(person\\d+|IM-\\d+)"`` for Kermany, so splits group by patient), plus the options common
to file data sets (``medfm.filesets``). Example::

    [dataset."folder/binary/kermany"]
    root = "../shared/assets/chest_xray_kermany"
    classes = ["NORMAL", "PNEUMONIA"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm import Dataset, DatasetSpec, UserError, hookimpl
from medfm.filesets import Sample, build_dataset, parse_options, relative_id, require_root

from ._common import (PRIMARY, SPLIT_ALIASES, check_classes, compile_regex, group_from_name, list_images,
                      natural_key, option_list, task_family)

TASKS = ("binary", "multiclass", "ordinal")
LAYOUT = "<root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>"


def scan(root: Path) -> dict[str | None, dict[str, list[Path]]]:
    """``{split or None: {class: [files]}}`` from the folder tree."""
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        out: dict[str | None, dict[str, list[Path]]] = {}
        for d in split_dirs:
            split = SPLIT_ALIASES[d.name.lower()]
            classes = out.setdefault(split, {})
            for c in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")):
                classes.setdefault(c.name, []).extend(list_images(c))
        return out
    return {None: {d.name: list_images(d) for d in subdirs}}


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the folder tree; see the module docstring for the layout and options."""
    opts = parse_options(spec.name, options, None, {"classes": None, "group_regex": None})
    root = require_root(spec.name, opts.root, LAYOUT)
    tree = scan(root)
    found = sorted({c for per in tree.values() for c in per}, key=natural_key)
    given = option_list(spec.name, "classes", opts.extra["classes"])
    if given:
        extra = [c for c in found if c not in given]
        if extra:
            raise UserError(f"{spec.name}: folder {extra[0]!r} under {root} is not among the classes {given}")
    classes = check_classes(spec.name, spec.task, given or found)
    pattern = compile_regex(spec.name, opts.extra["group_regex"])
    samples = []
    for split, per_class in tree.items():
        for cls, files in per_class.items():
            for f in files:
                rel = relative_id(root, f)
                samples.append(Sample(f, classes.index(cls), rel, group_from_name(pattern, rel), split,
                                      source=f"class folder {cls!r}"))
    info = {"layout": "split folders" if None not in tree else "class folders",
            "grouped_by": "group_regex" if pattern else None}
    return build_dataset(spec.name, spec.task, classes, samples, opts, info)


def make_spec(task: str, name: str) -> DatasetSpec:
    """The spec of ``folder/<task>/<name>``."""
    return DatasetSpec(name=f"folder/{task}/{name}", load=load, task=task, classes=(),
                       splits={"train": None, "val": None, "test": None}, primary_metric=PRIMARY[task],
                       modality="any", license="the data's own", citation="the data's own",
                       description=f"image folder (one sub-folder per class), {task}")


@hookimpl
def register_datasets(register):
    """The ``folder/`` family."""
    register(task_family("folder/", TASKS, make_spec,
                         "named folder/<task>/<name> (task binary, multiclass or ordinal): one sub-folder per class, "
                         "optional train/val/test folders; option root",
                         ["folder/binary/kermany", "folder/multiclass/my-set"]))
