"""MedMNIST v2 / MedMNIST+ 2D data sets, read from the published ``.npz`` files.

Files are ``<flag>.npz`` (28 px) or ``<flag>_<size>.npz`` (64, 128, 224 px) with keys
``train_images``, ``train_labels``, ``val_*`` and ``test_*``; labels are (N, 1), (N,) or,
for ChestMNIST, (N, 14). The official train/val/test split is used as published.
Set the folder with the ``root`` option (default: ``$MEDFM_DATA/medmnist``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm import Dataset, DatasetSpec, Split, UserError, hookimpl
from medfm.io import sha256_json

CITATION = ("Yang, J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image "
            "classification. Scientific Data 10, 41 (2023). MedMNIST+: Doerrich, S. et al. 2024, arXiv:2404.15786")
LICENSE = "CC BY 4.0 (per-set licences in the MedMNIST paper)"
SIZES = (28, 64, 128, 224)
ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
          "lung-right", "pancreas", "spleen")
# flag: (task, modality, classes, official split sizes)
SETS: dict[str, tuple[str, str, tuple[str, ...], tuple[int, int, int]]] = {
    "pathmnist": ("multiclass", "colon pathology", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), (89996, 10004, 7180)),
    "chestmnist": ("multilabel", "chest X-ray", (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"), (78468, 11219, 22433)),
    "dermamnist": ("multiclass", "dermatoscope", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), (7007, 1003, 2005)),
    "octmnist": ("multiclass", "retinal OCT", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), (97477, 10832, 1000)),
    "pneumoniamnist": ("binary", "chest X-ray", ("normal", "pneumonia"), (4708, 524, 624)),
    "retinamnist": ("ordinal", "fundus camera", ("0", "1", "2", "3", "4"), (1080, 120, 400)),
    "breastmnist": ("binary", "breast ultrasound", ("malignant", "normal, benign"), (546, 78, 156)),
    "bloodmnist": ("multiclass", "blood cell microscope", (
        "basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte", "neutrophil",
        "platelet"), (11959, 1712, 3421)),
    "tissuemnist": ("multiclass", "kidney cortex microscope", (
        "collecting duct, connecting tubule", "distal convoluted tubule", "glomerular endothelial cells",
        "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments",
        "thick ascending limb"), (165466, 23640, 47280)),
    "organamnist": ("multiclass", "abdominal CT (axial)", ORGANS, (34581, 6491, 17778)),
    "organcmnist": ("multiclass", "abdominal CT (coronal)", ORGANS, (13000, 2392, 8268)),
    "organsmnist": ("multiclass", "abdominal CT (sagittal)", ORGANS, (13940, 2452, 8829)),
}
PRIMARY = {"binary": "auroc", "multiclass": "auroc", "multilabel": "auroc", "ordinal": "kappa"}


def file_name(flag: str, size: int) -> str:
    """``breastmnist.npz`` at 28 px, ``breastmnist_224.npz`` otherwise (the published names)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def default_root() -> Path:
    """``$MEDFM_DATA/medmnist``, or ``~/.medfm/data/medmnist``."""
    return Path(os.environ.get("MEDFM_DATA", Path.home() / ".medfm" / "data")) / "medmnist"


def read_npz(path: Path, flag: str, task: str, n_classes: int) -> dict[str, Split]:
    """Read and check one published file; any problem names the file and what is wrong."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"MedMNIST file {path} does not exist; expected layout: <root>/{path.name} "
                        f"(download it from https://zenodo.org/records/10519652 or set the `root` option)") from None
    except Exception as exc:
        raise UserError(f"MedMNIST file {path} cannot be read ({type(exc).__name__}: {exc}); "
                        "it may be truncated: download it again") from None
    splits = {}
    with data:
        for split in ("train", "val", "test"):
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in data.files:
                    raise UserError(f"MedMNIST file {path} has no array {key!r} (it has {sorted(data.files)})")
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            if task == "multilabel":
                labels = labels.reshape(len(labels), -1).astype(np.int64)
                if labels.shape[1] != n_classes:
                    raise UserError(f"{path}: {split}_labels has {labels.shape[1]} columns, expected {n_classes}")
            else:
                labels = labels.reshape(-1).astype(np.int64)
                bad = (labels < 0) | (labels >= n_classes)
                if bad.any():
                    raise UserError(f"{path}: {split}_labels row {int(np.argmax(bad))} holds label "
                                    f"{int(labels[bad][0])}, outside 0..{n_classes - 1}")
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise UserError(f"{path}: {split}_images must be uint8 (N, H, W[, 3]), got {images.dtype} {images.shape}")
            splits[split] = Split(split, images, labels, ids=[f"{split}/{i}" for i in range(len(labels))])
    return splits


def _make_spec(flag: str, size: int) -> DatasetSpec:
    task, modality, classes, sizes = SETS[flag]
    name = f"medmnist/{flag}" + ("" if size == 28 else f"_{size}")

    def load(spec: DatasetSpec, root: str | None = None) -> Dataset:
        folder = Path(root).expanduser() if root else default_root()
        if not folder.is_dir():
            raise UserError(f"{spec.name}: data folder {folder} does not exist; expected {folder}/{file_name(flag, size)} "
                            "(set `root` under [dataset.\"medmnist/*\"] in your run config)")
        path = folder / file_name(flag, size)
        splits = read_npz(path, flag, task, len(classes))
        fingerprint = sha256_json({"file": path.name, "bytes": path.stat().st_size,
                                   "labels": {k: sha256_json(v.labels.tolist()) for k, v in splits.items()},
                                   "shapes": {k: list(np.shape(v.images)) for k, v in splits.items()}})
        return Dataset(task, classes, splits, fingerprint, info={"file": str(path)})

    return DatasetSpec(
        name=name, load=load, task=task, classes=classes,
        splits={"train": sizes[0], "val": sizes[1], "test": sizes[2]}, primary_metric=PRIMARY[task],
        modality=modality, license=LICENSE, citation=CITATION, revision="v2",
        description=f"MedMNIST {flag} at {size} px, official split")


@hookimpl
def register_datasets(register):
    """All 12 2D MedMNIST sets at 28, 64, 128 and 224 px."""
    for flag in SETS:
        for size in SIZES:
            register(_make_spec(flag, size))
