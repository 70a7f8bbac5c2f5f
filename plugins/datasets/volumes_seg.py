"""3D segmentation sets, read in their publishers' layouts and cut into axial slices.

- ``msd/<TaskNN_Name>``: the Medical Segmentation Decathlon (``dataset.json``, ``imagesTr/``,
  ``labelsTr/``; e.g. ``msd/Task09_Spleen`` CT, ``msd/Task04_Hippocampus`` and ``msd/Task02_Heart``
  MRI). Class names and the modality come from ``dataset.json``; the window follows the
  modality (CT or MRI; a multi-channel MRI uses its first channel). The Decathlon's test images
  have no published labels, so the labelled training volumes are split, seeded, by volume.
- ``btcv/abdomen``: BTCV (Synapse multi-organ CT, 13 organs), ``RawData/Training/img/img0001.nii.gz``
  with ``RawData/Training/label/label0001.nii.gz`` (``Training/`` directly under the root works too).
- ``nifti/<name>``: any folder of image volumes and label volumes with matching file names
  (``images/`` and ``labels/`` by default), with the classes and the window given as options.

Every volume is reoriented to RAS, windowed (CT [-1024, 600] HU, MRI its 5th-95th percentile)
and scaled to [0, 1]; every axial slice becomes an image with its mask, and the voxel spacing is
kept, so each volume is scored whole in millimetres (``medfm.datasets.volume_dataset``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medfm.datasets import (
    NIFTI_SUFFIXES,
    DatasetFamily,
    DatasetSpec,
    UserError,
    VolumeCase,
    default_data_root,
    fraction,
    hookimpl,
    one_of,
    volume_dataset,
)

MSD_CITATION = "Antonelli, M. et al. The Medical Segmentation Decathlon. Nature Communications 13, 4128 (2022)."
BTCV_CITATION = "Landman, B. et al. MICCAI Multi-Atlas Labeling Beyond the Cranial Vault Workshop and Challenge (2015)."
#: The Decathlon's tasks: modality and classes as their dataset.json files give them.
MSD_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Task01_BrainTumour": ("mri", ("background", "edema", "non-enhancing tumor", "enhancing tumour")),
    "Task02_Heart": ("mri", ("background", "left atrium")),
    "Task03_Liver": ("ct", ("background", "liver", "cancer")),
    "Task04_Hippocampus": ("mri", ("background", "Anterior", "Posterior")),
    "Task05_Prostate": ("mri", ("background", "PZ", "TZ")),
    "Task06_Lung": ("ct", ("background", "cancer")),
    "Task07_Pancreas": ("ct", ("background", "pancreas", "cancer")),
    "Task08_HepaticVessel": ("ct", ("background", "Vessel", "Tumour")),
    "Task09_Spleen": ("ct", ("background", "spleen")),
    "Task10_Colon": ("ct", ("background", "colon cancer primaries")),
}
BTCV_CLASSES = (
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach",
    "aorta", "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland",
    "left adrenal gland",
)  # fmt: skip
SPLIT_OPTIONS = {"root": None, "window": "auto", "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2,
                 "split_file": None, "split_dir": None}  # fmt: skip
SPLIT_LIMITS = {"window": one_of("auto", "ct", "mri"), "val_fraction": fraction(), "test_fraction": fraction()}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _known(spec: DatasetSpec, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(spec.options or {}))
    if unknown:
        raise UserError(f"{spec.name}: unknown option {unknown[0]!r}; options are {sorted(spec.options or {})}")


def _root(options: dict[str, Any], default: Path) -> Path:
    root = Path(options.get("root") or default).expanduser()
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; pass --set dataset.<name>.root=PATH")
    return root


def _window(name: str, requested: str, modality: str) -> str:
    if requested != "auto":
        return requested
    if modality not in ("ct", "mri"):
        raise UserError(f"{name}: modality {modality!r} has no default window; set the option window='ct' or 'mri'")
    return modality


def _build(spec: DatasetSpec, cases: list[VolumeCase], classes: tuple[str, ...], window: str, root: Path,
           options: dict[str, Any], info: dict[str, Any]):  # fmt: skip
    split_file = options.get("split_file")
    split_dir = options.get("split_dir")
    return volume_dataset(
        spec.name,
        cases,
        classes,
        window,
        root,
        seed=int(options.get("split_seed", 0)),
        val_fraction=float(options.get("val_fraction", 0.2)),
        test_fraction=float(options.get("test_fraction", 0.2)),
        split_file=Path(split_file) if split_file else None,
        split_dir=Path(split_dir) if split_dir else None,
        info=info,
    )


# ------------------------------------------------------------------ Decathlon
def load_msd(spec: DatasetSpec, **options: Any):
    """A Decathlon task folder: ``dataset.json`` lists the labelled training volumes."""
    _known(spec, options)
    task = spec.name.split("/", 1)[1]
    root = _root(options, default_data_root("msd") / task)
    manifest = root / "dataset.json"
    if not manifest.is_file():
        raise UserError(
            f"{spec.name}: {manifest} is missing; point root at the {task} folder (dataset.json, imagesTr/)"
        )
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
        modality = {int(k): str(v) for k, v in meta.get("modality", {"0": "CT"}).items()}
        training = [(str(e["image"]), str(e["label"])) for e in meta["training"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"{manifest}: not a Decathlon dataset.json ({type(exc).__name__}: {exc}); it needs 'labels' and "
            "'training' (a list of image/label pairs)"
        ) from None
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise UserError(f"{manifest}: 'labels' must number the classes 0..K, background first")
    classes = tuple(labels[k] for k in sorted(labels))
    if spec.classes and len(spec.classes) != len(classes):
        raise UserError(f"{manifest}: {len(classes)} classes, but {spec.name} has {len(spec.classes)}; is it {task}?")
    first = modality.get(0, "CT").lower()
    window = _window(spec.name, options.get("window", "auto"), "ct" if first == "ct" else "mri")
    cases = [
        VolumeCase(_stem(Path(image)), (root / image).resolve(), (root / label).resolve()) for image, label in training
    ]
    info = {"layout": "Medical Segmentation Decathlon", "modality": modality[0] if modality else "", "task": task}
    if len(modality) > 1:
        info["channels"] = f"{len(modality)} channels; the first ({modality[0]}) is used"
    return _build(spec, cases, spec.classes or classes, window, root, options, info)


def msd_spec(task: str) -> DatasetSpec:
    """The spec of a Decathlon task (``TaskNN_Name``)."""
    if not re.fullmatch(r"Task\d\d_[A-Za-z0-9]+", task):
        raise KeyError(f"{task!r} is not a Decathlon task name (TaskNN_Name, e.g. Task09_Spleen)")
    modality, classes = MSD_TASKS.get(task, ("", ()))
    return DatasetSpec(
        name=f"msd/{task}",
        load=load_msd,
        task="segmentation",
        classes=classes,
        primary_metric="dice",
        modality=modality.upper() if modality else "",
        license="CC-BY-SA 4.0 (Medical Segmentation Decathlon)",
        citation=MSD_CITATION,
        description=f"Medical Segmentation Decathlon {task}: labelled training volumes, axial slices, split by volume",
        options=dict(SPLIT_OPTIONS),
        limits=dict(SPLIT_LIMITS),
    )


# ------------------------------------------------------------------ BTCV
def load_btcv(spec: DatasetSpec, **options: Any):
    """BTCV's training volumes and their 13-organ labels."""
    _known(spec, options)
    root = _root(options, default_data_root("btcv"))
    base = next((b for b in (root / "RawData" / "Training", root / "Training") if (b / "img").is_dir()), None)
    if base is None:
        raise UserError(f"{spec.name}: no RawData/Training/img/ or Training/img/ under {root}; point root at BTCV")
    cases = []
    for image in sorted((base / "img").glob("img*.nii*")):
        number = re.sub(r"\D", "", _stem(image))
        label = next((base / "label").glob(f"label{number}.nii*"), base / "label" / f"label{number}.nii.gz")
        cases.append(VolumeCase(f"img{number}", image, label))
    if not cases:
        raise UserError(f"{spec.name}: no img*.nii.gz files in {base / 'img'}")
    window = _window(spec.name, options.get("window", "auto"), "ct")
    return _build(spec, cases, BTCV_CLASSES, window, root, options, {"layout": "BTCV (Synapse)", "modality": "CT"})


# ------------------------------------------------------------------ generic folders
NIFTI_OPTIONS = {**SPLIT_OPTIONS, "window": "ct", "images": "images", "labels": "labels",
                 "classes": ["background", "foreground"], "group_regex": None}  # fmt: skip


def load_nifti(spec: DatasetSpec, **options: Any):
    """Image volumes and label volumes with the same file names, in two folders of ``root``."""
    _known(spec, options)
    if not options.get("root"):
        raise UserError(f"{spec.name}: set the option root (a folder with images/ and labels/)")
    root = _root(options, Path("."))
    images_dir, labels_dir = root / str(options.get("images", "images")), root / str(options.get("labels", "labels"))
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise UserError(f"{spec.name}: folder {folder} is missing; set the options images= and labels=")
    classes = tuple(str(c) for c in options.get("classes") or ("background", "foreground"))
    if len(classes) < 2:
        raise UserError(f"{spec.name}: classes must list at least background and one foreground class")
    pattern = options.get("group_regex")
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise UserError(f"{spec.name}: group_regex {pattern!r} is not a regular expression ({exc})") from None
    cases = []
    for image in sorted(p for p in images_dir.iterdir() if p.name.endswith(NIFTI_SUFFIXES)):
        label = labels_dir / image.name
        if not label.is_file():
            raise UserError(f"{spec.name}: {image.name} has no label volume {label}; every image needs one")
        stem = _stem(image)
        match = regex.search(stem) if regex else None
        patient = (match.group(1) if match and match.groups() else match.group(0)) if match else None
        cases.append(VolumeCase(stem, image, label, patient))
    if not cases:
        raise UserError(f"{spec.name}: no NIfTI volumes in {images_dir}")
    window = _window(spec.name, str(options.get("window", "ct")), "")
    return _build(spec, cases, classes, window, root, options, {"layout": "nifti images/labels folders"})


def nifti_spec(name: str) -> DatasetSpec:
    """``nifti/<name>``: a folder of image and label volumes."""
    if not name:
        raise KeyError("nifti/ needs a name, e.g. nifti/my-liver-set")
    return DatasetSpec(
        name=f"nifti/{name}",
        load=load_nifti,
        task="segmentation",
        classes=(),
        primary_metric="dice",
        description="image and label volumes with matching names (images/, labels/), axial slices",
        options=dict(NIFTI_OPTIONS),
        limits={**SPLIT_LIMITS, "window": one_of("ct", "mri")},
    )


@hookimpl
def register_datasets(register):
    """The Decathlon and generic NIfTI families, and BTCV."""
    register(
        DatasetFamily(
            "msd/",
            msd_spec,
            candidates=lambda: list(MSD_TASKS),
            description="Medical Segmentation Decathlon task folders (dataset.json, imagesTr/, labelsTr/)",
            examples=("msd/Task09_Spleen", "msd/Task04_Hippocampus", "msd/Task02_Heart"),
            license="CC-BY-SA 4.0",
            citation=MSD_CITATION,
        )
    )
    register(
        DatasetFamily(
            "nifti/",
            nifti_spec,
            description="a folder of image volumes and label volumes with matching file names",
            examples=("nifti/my-set",),
        )
    )
    register(
        DatasetSpec(
            name="btcv/abdomen",
            load=load_btcv,
            task="segmentation",
            classes=BTCV_CLASSES,
            primary_metric="dice",
            modality="CT",
            license="BTCV challenge terms (Synapse)",
            citation=BTCV_CITATION,
            description="BTCV abdominal CT, 13 organs, training volumes split by volume",
            options=dict(SPLIT_OPTIONS),
            limits=dict(SPLIT_LIMITS),
        )
    )
