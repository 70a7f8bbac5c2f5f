"""``folder/<task>/<name>``: any folder with one sub-folder per class, optionally inside split folders.

Layouts (the Kermany chest X-ray and most Kaggle sets look like this)::

    <root>/<class>/<image>                      -> seeded, stratified split (written to a split file)
    <root>/{train,val,test}/<class>/<image>     -> the split folders as given
    <root>/{train,test}/<class>/<image>         -> val carved from train
    <root>/[<split>/]<class>/<patient>/<image>  -> a sub-folder per patient (any depth below it)

``task`` is binary, multiclass or ordinal. Options: ``root`` (required), ``classes`` (the
order of the class folders; default: natural sort, so the second of two is the positive
class), ``group_regex``, plus the options common to file data sets (``medfm.filesets``).

Splits are grouped by patient. Without ``group_regex`` the patient is the first folder below
the class folder when images sit in such sub-folders, else the start of the file name before
a separator and an image index (``DEFAULT_GROUP_REGEX``: ``person1_bacteria_1.jpeg`` ->
``person1``, ``NORMAL2-IM-0012-0001.jpeg`` -> ``NORMAL2-IM-0012``, ``P7_2.png`` -> ``P7``);
this default is used only when it finds a real grouping (see ``default_grouping``), else each
image is its own patient and a ``PatientGroupingWarning`` says so. ``group_regex`` (searched
in each path relative to ``root``; its first group, or the whole match, is the patient id)
overrides the default, ``group_regex = false`` turns grouping off. ``dataset.info`` records
``grouped_by`` (the regex, ``"patient folder"`` or null) and ``groups``. Example::

    [dataset."folder/binary/kermany"]
    root = "../shared/assets/chest_xray_kermany"
    classes = ["NORMAL", "PNEUMONIA"]

See ``docs/datasets.md``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from medfm.datasets import (
    PRIMARY,
    SPLIT_ALIASES,
    Dataset,
    DatasetSpec,
    PatientGroupingWarning,
    Sample,
    UserError,
    build_dataset,
    check_classes,
    compile_regex,
    count_groups,
    file_dataset_limits,
    file_dataset_options,
    group_from_name,
    hookimpl,
    list_images,
    natural_key,
    option_list,
    parse_options,
    relative_id,
    require_root,
    task_family,
    ungrouped_message,
)

TASKS = ("binary", "multiclass", "ordinal")
LAYOUT = "<root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>"
#: matched against the file name (not the path): the patient id at its start, before ``_`` or ``-``,
#: an optional word and an image index: ``person1_virus_6.jpeg``, ``NORMAL2-IM-0012-0001.jpeg``,
#: ``P12_3.png``, ``sub-04-2.nii.gz``; the id must hold a digit (``COVID-12.png``, ``image_3.png``: none)
DEFAULT_GROUP_REGEX = r"^(.*?\d.*?)[_-](?:[A-Za-z]+[_-])?\d+\.\w+(?:\.gz)?$"
PATIENT_FOLDER = "patient folder"
#: the options of its own, with their defaults (besides the common ones of file data sets)
EXTRA_OPTIONS = {"classes": None, "group_regex": None}
HOW_TO_GROUP = (
    "if the file paths carry a patient id, set the group_regex option to a regular expression whose first "
    "group captures it from the path relative to root (e.g. group_regex = '(person\\d+)_' for file names "
    "like person12_1.png); group_regex = false turns grouping off without this warning"
)


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


def is_real_grouping(groups: Sequence[str | None], classes: Sequence[str]) -> bool:
    """A grouping worth using: one patient with two or more images, more than one group, and no
    class whose images (two or more) all fall in one group (that group would be the class, not a patient)."""
    counts = Counter(g for g in groups if g is not None)
    if not counts or max(counts.values()) < 2:
        return False
    if len(counts) + sum(g is None for g in groups) < 2:
        return False
    per_class: dict[str, set[str | None]] = {}
    sizes = Counter(classes)
    for g, c in zip(groups, classes):
        per_class.setdefault(c, set()).add(g)
    return not any(sizes[c] >= 2 and len(gs) == 1 and None not in gs for c, gs in per_class.items())


def default_grouping(
    rels: Sequence[str], below: Sequence[tuple[str, ...]], classes: Sequence[str]
) -> tuple[str | None, list[str | None]]:
    """``(grouped_by, patient per image)`` found without ``group_regex``, or ``(None, [None, ...])``.

    ``below`` is each image's path below its class folder. First candidate: the first folder below
    the class folder (when any image sits in one); second: ``DEFAULT_GROUP_REGEX`` on the file name.
    The first that ``is_real_grouping`` is used.
    """
    if any(len(parts) > 1 for parts in below):
        folders = [parts[0] if len(parts) > 1 else None for parts in below]
        if is_real_grouping(folders, classes):
            return PATIENT_FOLDER, folders
    pattern = compile_regex("folder", DEFAULT_GROUP_REGEX)
    names = [group_from_name(pattern, rel.rsplit("/", 1)[-1]) for rel in rels]
    if is_real_grouping(names, classes):
        return DEFAULT_GROUP_REGEX, names
    return None, [None] * len(rels)


def load(spec: DatasetSpec, **options: Any) -> Dataset:
    """Read the folder tree; see the module docstring for the layout and options."""
    opts = parse_options(spec.name, options, None, EXTRA_OPTIONS)
    root = require_root(spec.name, opts.root, LAYOUT)
    tree = scan(root)
    found = sorted({c for per in tree.values() for c in per}, key=natural_key)
    given = option_list(spec.name, "classes", opts.extra["classes"])
    if given:
        extra = [c for c in found if c not in given]
        if extra:
            raise UserError(f"{spec.name}: folder {extra[0]!r} under {root} is not among the classes {given}")
    classes = check_classes(spec.name, spec.task, given or found)
    option = opts.extra["group_regex"]
    pattern = compile_regex(spec.name, option)
    entries: list[tuple[Path, str, str | None, str, tuple[str, ...]]] = []
    for split, per_class in tree.items():
        depth = 1 if split is None else 2  # <class>/... or <split>/<class>/...
        for cls, files in per_class.items():
            for f in files:
                rel = relative_id(root, f)
                entries.append((f, cls, split, rel, tuple(rel.split("/"))[depth:]))
    rels = [e[3] for e in entries]
    info: dict[str, Any] = {"layout": "split folders" if None not in tree else "class folders"}
    if pattern is not None:
        patients = [group_from_name(pattern, rel) for rel in rels]
        if rels and all(p is None for p in patients):
            raise UserError(
                f"{spec.name}: group_regex {option!r} matches none of the {len(rels)} image paths "
                f"(e.g. {rels[0]!r}); it is searched in each path relative to root, and its first group "
                "(or the whole match) is the patient id"
            )
        grouped_by: str | None = option
    elif option is None:
        grouped_by, patients = default_grouping(rels, [e[4] for e in entries], [e[1] for e in entries])
        if grouped_by is None and entries:
            info["warning"] = ungrouped_message(spec.name, len(entries), HOW_TO_GROUP)
            warnings.warn(info["warning"], PatientGroupingWarning, stacklevel=2)
        else:
            patients = official_split_patients(spec.name, patients, [e[2] for e in entries], info)
    else:  # group_regex = false
        grouped_by, patients = None, [None] * len(entries)
    info["grouped_by"] = grouped_by
    samples = [
        Sample(f, classes.index(cls), rel, patient, split, source=f"class folder {cls!r}")
        for (f, cls, split, rel, _), patient in zip(entries, patients)
    ]
    dataset = build_dataset(spec.name, spec.task, classes, samples, opts, info)
    dataset.info["groups"] = count_groups(dataset)
    return dataset


def official_split_patients(
    name: str, patients: list[str | None], splits: Sequence[str | None], info: dict[str, Any]
) -> list[str | None]:
    """Patients found by the default grouping stay within each published split folder.

    A patient (by the default grouping) with images in two split folders is the publisher's split, used
    as published: the patient ids are then qualified by their split folder (so val, where carved from
    train, is still grouped) and a ``PatientGroupingWarning`` names one such patient.
    """
    where: dict[str, set[str]] = {}
    for p, s in zip(patients, splits):
        if p is not None and s is not None:
            where.setdefault(p, set()).add(s)
    shared = sorted((p for p, s in where.items() if len(s) > 1), key=natural_key)
    if not shared:
        return patients
    info["patients_in_two_split_folders"] = len(shared)
    info["warning"] = (
        f"{name}: {len(shared)} patient(s) found by the default grouping have images in two split folders, e.g. "
        f"{shared[0]!r} in {sorted(where[shared[0]])}; the published split is used as it is and patients are "
        "grouped within each split folder (set group_regex to group otherwise, or group_regex = false for no "
        "grouping)"
    )
    warnings.warn(info["warning"], PatientGroupingWarning, stacklevel=3)
    return [f"{s}/{p}" if p is not None and s is not None else p for p, s in zip(patients, splits)]


def make_spec(task: str, name: str) -> DatasetSpec:
    """The spec of ``folder/<task>/<name>``."""
    return DatasetSpec(
        name=f"folder/{task}/{name}",
        load=load,
        task=task,
        classes=(),
        splits={"train": None, "val": None, "test": None},
        primary_metric=PRIMARY[task],
        modality="any",
        license="the data's own",
        citation="the data's own",
        options=file_dataset_options(EXTRA_OPTIONS),
        limits=file_dataset_limits(),
        description=f"image folder (one sub-folder per class), {task}",
    )


@hookimpl
def register_datasets(register):
    """The ``folder/`` family."""
    register(
        task_family(
            "folder/",
            TASKS,
            make_spec,
            "named folder/<task>/<name> (task binary, multiclass or ordinal): one sub-folder per class, "
            "optional train/val/test folders; option root",
            ["folder/binary/kermany", "folder/multiclass/my-set"],
        )
    )
