"""MedMNIST v2 / MedMNIST+ 2D data sets, read from the published ``.npz`` files.

Files are ``<flag>.npz`` (28 px) or ``<flag>_<size>.npz`` (64, 128, 224 px) with keys
``train_images``, ``train_labels``, ``val_*`` and ``test_*``; labels are (N, 1), (N,) or,
for ChestMNIST, (N, 14). The official train/val/test split is used as published.
Set the folder with the ``root`` option (default: ``$MEDFM_DATA/medmnist``).

Offline, the file is read from ``root``. With ``download = true`` a missing file is fetched
from the official Zenodo record (https://zenodo.org/records/10519652, the URLs of the
``medmnist`` package's ``info.py``) and kept only if its MD5 matches the official one.
``verify_md5 = true`` also checks a file already on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfm.datasets import Dataset, DatasetSpec, Split, UserError, download, hookimpl, md5_file, sha256_json

CITATION = (
    "Yang, J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image "
    "classification. Scientific Data 10, 41 (2023). MedMNIST+: Doerrich, S. et al. 2024, arXiv:2404.15786"
)
LICENSE = "CC BY 4.0"
LICENSES = {"dermamnist": "CC BY-NC 4.0"}  # the rest are CC BY 4.0 (medmnist info.py)
ZENODO = "https://zenodo.org/records/10519652/files/{name}?download=1"
# Official MD5 of each file at 28, 64, 128 and 224 px (medmnist 3.0.2, medmnist/info.py).
MD5: dict[str, tuple[str, str, str, str]] = {
    "pathmnist": (
        "a8b06965200029087d5bd730944a56c1",
        "55aa9c1e0525abe5a6b9d8343a507616",
        "ac42d08fb904d92c244187169d1fd1d9",
        "2c51a510bcdc9cf8ddb2af93af1eadec",
    ),
    "chestmnist": (
        "02c8a6516a18b556561a56cbdd36c4a8",
        "9de6cd0b934ebb5b7426cfba5efbae16",
        "db107e5590b27930b62dbaf558aebee3",
        "45bd33e6f06c3e8cdb481c74a89152aa",
    ),
    "dermamnist": (
        "0744692d530f8e62ec473284d019b0c7",
        "b70a2f5635c6199aeaa28c31d7202e1f",
        "2defd784463fa5243564e855ed717de1",
        "8974907d8e169bef5f5b96bc506ae45d",
    ),
    "octmnist": (
        "c68d92d5b585d8d81f7112f81e2d0842",
        "e229e9440236b774d9f0dfef9d07bdaf",
        "0a97e76651ace45c5d943ee3f65b63ae",
        "abc493b6d529d5de7569faaef2773ba3",
    ),
    "pneumoniamnist": (
        "28209eda62fecd6e6a2d98b1501bb15f",
        "8f4eceb4ccffa70c672198ea285246c6",
        "05b46931834c231683c68f40c47b2971",
        "d6a3c71de1b945ea11211b03746c1fe1",
    ),
    "retinamnist": (
        "bd4c0672f1bba3e3a89f0e4e876791e4",
        "afda852cc34dcda56f86ad2b2457dbcc",
        "e48e916a24454daf90583d4e6efb1a18",
        "eae7e3b6f3fcbda4ae613ebdcbe35348",
    ),
    "breastmnist": (
        "750601b1f35ba3300ea97c75c52ff8f6",
        "742edef2a1fd1524b2efff4bd7ba9364",
        "363e4b3f8d712e9b5de15470a2aaadf1",
        "b56378a6eefa9fed602bb16d192d4c8b",
    ),
    "bloodmnist": (
        "7053d0359d879ad8a5505303e11de1dc",
        "2b94928a2ae4916078ca51e05b6b800b",
        "adace1e0ed228fccda1f39692059dd4c",
        "b718ff6835fcbdb22ba9eacccd7b2601",
    ),
    "tissuemnist": (
        "ebe78ee8b05294063de985d821c1c34b",
        "123ece2eba09d0aa5d698fda57103344",
        "61b955355d7425a89687b06cca3ce0c2",
        "b077128c4a949f0a4eb01517f9037b9c",
    ),
    "organamnist": (
        "68e3f8846a6bd62f0c9bf841c0d9eacc",
        "2dcccc29b88e6da5a01161ef20cda288",
        "eeae80d0a227a8d099027e1b3cfd3b60",
        "50747347e05c87dd3aaf92c49f9f3170",
    ),
    "organcmnist": (
        "b9ceb9546e10131b32923c5bbeaea2b1",
        "3ce34a8724ea6f548e6db4744d03b6a9",
        "773c1f009daa3fe5d9a2a201b2a7ed94",
        "050f5e875dc056f6768abf94ec9995d1",
    ),
    "organsmnist": (
        "9ab87b696fb54e2a387ebe992d6ed5f1",
        "53a6d115339d874c25e309a994ff46d3",
        "ded0c5fa01a95dc4978b956f613e9b8e",
        "b354719e553fbbb2513d5533f52a4cb1",
    ),
}
SIZES = (28, 64, 128, 224)
ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)
# flag: (task, modality, classes, official split sizes)
SETS: dict[str, tuple[str, str, tuple[str, ...], tuple[int, int, int]]] = {
    "pathmnist": (
        "multiclass",
        "colon pathology",
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        (89996, 10004, 7180),
    ),
    "chestmnist": (
        "multilabel",
        "chest X-ray",
        (
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        (78468, 11219, 22433),
    ),
    "dermamnist": (
        "multiclass",
        "dermatoscope",
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        (7007, 1003, 2005),
    ),
    "octmnist": (
        "multiclass",
        "retinal OCT",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        (97477, 10832, 1000),
    ),
    "pneumoniamnist": ("binary", "chest X-ray", ("normal", "pneumonia"), (4708, 524, 624)),
    "retinamnist": ("ordinal", "fundus camera", ("0", "1", "2", "3", "4"), (1080, 120, 400)),
    "breastmnist": ("binary", "breast ultrasound", ("malignant", "normal, benign"), (546, 78, 156)),
    "bloodmnist": (
        "multiclass",
        "blood cell microscope",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        (11959, 1712, 3421),
    ),
    "tissuemnist": (
        "multiclass",
        "kidney cortex microscope",
        (
            "collecting duct, connecting tubule",
            "distal convoluted tubule",
            "glomerular endothelial cells",
            "interstitial endothelial cells",
            "leukocytes",
            "podocytes",
            "proximal tubule segments",
            "thick ascending limb",
        ),
        (165466, 23640, 47280),
    ),
    "organamnist": ("multiclass", "abdominal CT (axial)", ORGANS, (34561, 6491, 17778)),
    "organcmnist": ("multiclass", "abdominal CT (coronal)", ORGANS, (12975, 2392, 8216)),
    "organsmnist": ("multiclass", "abdominal CT (sagittal)", ORGANS, (13932, 2452, 8827)),
}
# Identities (medfm.test_set.split_identity) of the published test splits that medfm has checked:
# ids "test/0".."test/<n-1>" in file order with the published labels. A run on a file whose test
# split differs fails; a record on another test set is rejected by `medfm validate`.
PUBLISHED_TEST_IDENTITY = {
    ("breastmnist", 28): "fa25e407c82cb588c089ca67d4304f67a4739c729a47a7bb7da079c595dc938b",
}
#: the options ``load`` takes, with their defaults (``root`` None: ``default_root()``)
OPTIONS = {"root": None, "download": False, "verify_md5": False}
PRIMARY = {"binary": "auroc", "multiclass": "auroc", "multilabel": "auroc", "ordinal": "kappa"}


def file_name(flag: str, size: int) -> str:
    """``breastmnist.npz`` at 28 px, ``breastmnist_224.npz`` otherwise (the published names)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def official_url(flag: str, size: int) -> str:
    """The Zenodo URL of one published file."""
    return ZENODO.format(name=file_name(flag, size))


def official_md5(flag: str, size: int) -> str:
    """The published MD5 of one file."""
    return MD5[flag][SIZES.index(size)]


def fetch(flag: str, size: int, folder: Path) -> Path:
    """Download one file into ``folder`` from Zenodo, verified against the official MD5."""
    folder.mkdir(parents=True, exist_ok=True)
    return download(official_url(flag, size), folder / file_name(flag, size), official_md5(flag, size))


def default_root() -> Path:
    """``$MEDFM_DATA/medmnist``, or ``~/.medfm/data/medmnist``."""
    return Path(os.environ.get("MEDFM_DATA", Path.home() / ".medfm" / "data")) / "medmnist"


def read_npz(path: Path, flag: str, task: str, n_classes: int) -> dict[str, Split]:
    """Read and check one published file; any problem names the file and what is wrong."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(
            f"MedMNIST file {path} does not exist; expected layout: <root>/{path.name} "
            "(set download = true to fetch it from https://zenodo.org/records/10519652, "
            "or set the `root` option)"
        ) from None
    except Exception as exc:
        raise UserError(
            f"MedMNIST file {path} cannot be read ({type(exc).__name__}: {exc}); it may be truncated: download it again"
        ) from None
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
                    raise UserError(
                        f"{path}: {split}_labels row {int(np.argmax(bad))} holds label "
                        f"{int(labels[bad][0])}, outside 0..{n_classes - 1}"
                    )
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise UserError(
                    f"{path}: {split}_images must be uint8 (N, H, W[, 3]), got {images.dtype} {images.shape}"
                )
            splits[split] = Split(split, images, labels, ids=[f"{split}/{i}" for i in range(len(labels))])
    return splits


def _make_spec(flag: str, size: int) -> DatasetSpec:
    task, modality, classes, sizes = SETS[flag]
    name = f"medmnist/{flag}" + ("" if size == 28 else f"_{size}")

    def load(spec: DatasetSpec, root: str | None = None, download: bool = False, verify_md5: bool = False) -> Dataset:
        folder = Path(root).expanduser() if root else default_root()
        path = folder / file_name(flag, size)
        if download and not path.is_file():
            fetch(flag, size, folder)
        if folder.is_file():
            raise UserError(
                f"{spec.name}: `root` must be the folder that holds {file_name(flag, size)}, not a "
                f'file; set root = "{folder.parent}"'
            )
        if not folder.is_dir():
            raise UserError(
                f"{spec.name}: data folder {folder} does not exist; "
                f"expected {folder}/{file_name(flag, size)} "
                '(set `root` under [dataset."medmnist/*"] in your run config, or download = true)'
            )
        if verify_md5 and path.is_file() and md5_file(path) != official_md5(flag, size):
            raise UserError(
                f"{spec.name}: {path} has MD5 {md5_file(path)}, not the official "
                f"{official_md5(flag, size)}; download it again (download = true after deleting it)"
            )
        splits = read_npz(path, flag, task, len(classes))
        fingerprint = sha256_json(
            {
                "file": path.name,
                "bytes": path.stat().st_size,
                "labels": {k: sha256_json(v.labels.tolist()) for k, v in splits.items()},
                "shapes": {k: list(np.asarray(v.images).shape) for k, v in splits.items()},
            }
        )
        return Dataset(
            task,
            classes,
            splits,
            fingerprint,
            info={
                "file": str(path),
                "split_method": "official",
                "split_file": None,
                "on_error": "fail",
                "skipped": 0,
                "url": official_url(flag, size),
                "official_md5": official_md5(flag, size),
            },
        )

    return DatasetSpec(
        name=name,
        load=load,
        task=task,
        classes=classes,
        splits={"train": sizes[0], "val": sizes[1], "test": sizes[2]},
        primary_metric=PRIMARY[task],
        modality=modality,
        license=LICENSES.get(flag, LICENSE),
        citation=CITATION,
        revision="v2",
        description=f"MedMNIST {flag} at {size} px, official split",
        test_identity=PUBLISHED_TEST_IDENTITY.get((flag, size)),
        options=OPTIONS,
    )


@hookimpl
def register_datasets(register):
    """All 12 2D MedMNIST sets at 28, 64, 128 and 224 px."""
    for flag in SETS:
        for size in SIZES:
            register(_make_spec(flag, size))
