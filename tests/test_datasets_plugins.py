"""Each data set plugin on a tiny fixture written in that data set's own published layout.

The writers below reproduce the publishers' file names, CSV columns (in order), folder
nesting and label encodings; the images are small generated PNG/JPEG files or real DICOM
files shipped by pydicom. Other test modules import the writers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfm import Dataset, UserError

pytest.importorskip("pydicom")

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)
MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
    "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
    "ROI mask file path"
)
CALC_HEADER = (
    "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,"
    "calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,"
    "ROI mask file path"
)


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 20), mode: str = "L") -> Path:
    """A small random image (PNG/JPEG by suffix)."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def dicom_file(name: str) -> Path:
    """A DICOM test file shipped by pydicom or by pydicom-data, found without any download."""
    import importlib.util

    import pydicom

    bundled = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if bundled.is_file():
        return bundled
    store = importlib.util.find_spec("data_store")  # the pydicom-data package
    if store is not None and store.origin:
        extra = Path(store.origin).parent / "data" / name
        if extra.is_file():
            return extra
    pytest.skip(f"{name} is not installed (it ships in pydicom-data: pip install pydicom-data)")


def load(registry, name: str, **options) -> Dataset:
    spec = registry.get("dataset", name)
    return spec.load(spec, **options)


@pytest.fixture
def registry(registry_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    return registry_factory()


def assert_well_formed(ds: Dataset, task: str, n_classes: int) -> None:
    assert ds.task == task
    assert len(ds.classes) == n_classes
    assert set(ds.split_names) == {"train", "val", "test"}
    ds.check_group_leaks()
    for name in ds.split_names:
        split = ds.split(name)
        assert len(split) > 0
        image = split.images[0]
        assert image.dtype == np.uint8 and image.ndim in (2, 3)
        if task == "multilabel":
            assert split.labels.shape == (len(split), n_classes)
    assert ds.info["on_error"] in ("fail", "skip") and "skipped" in ds.info


# ------------------------------------------------------------------------------ NIH ChestX-ray14
def write_nih(root: Path, kaggle_parts: bool = True) -> Path:
    """Data_Entry_2017_v2020.csv, the two official lists and images_00N/images/*.png."""
    rows, test, train_val = [], [], []
    findings = [
        "No Finding",
        "Cardiomegaly",
        "Cardiomegaly|Emphysema",
        "Effusion",
        "No Finding",
        "Hernia|Mass",
        "Pleural_Thickening",
        "No Finding",
        "Nodule|Pneumonia|Infiltration",
        "Atelectasis",
    ]
    for p in range(1, 11):
        for follow in range(2):
            name = f"{p:08d}_{follow:03d}.png"
            rows.append(
                f"{name},{findings[p - 1]},{follow},{p},{50 + p},{'M' if p % 2 else 'F'},PA,2500,2048,0.143,0.143,"
            )
            (test if p >= 9 else train_val).append(name)
            part = f"images_{1 + p % 2:03d}/images" if kaggle_parts else "images"
            write_image(root / part / name, p * 10 + follow)
    (root / "Data_Entry_2017_v2020.csv").write_text(NIH_HEADER + "\n" + "\n".join(rows) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    return root


def test_nih_official_split_patient_grouped_val(registry, tmp_path):
    ds = load(registry, "nih/chestx-ray14", root=str(write_nih(tmp_path / "nih")))
    assert_well_formed(ds, "multilabel", 14)
    assert sorted(ds.split("test").ids) == [f"{p:08d}_{f:03d}.png" for p in (9, 10) for f in range(2)]
    train = dict(zip(ds.split("train").ids, ds.split("train").labels.tolist()))
    val = dict(zip(ds.split("val").ids, ds.split("val").labels.tolist()))
    both = {**train, **val}
    assert sum(both["00000001_000.png"]) == 0  # "No Finding" is all zeros
    assert both["00000003_001.png"][ds.classes.index("Cardiomegaly")] == 1
    assert both["00000003_001.png"][ds.classes.index("Emphysema")] == 1
    assert {i[:8] for i in train}.isdisjoint({i[:8] for i in val})  # val carved by patient
    assert ds.info["split_file"] and Path(ds.info["split_file"]).is_file()


def test_nih_images_in_single_folder(registry, tmp_path):
    ds = load(registry, "nih/chestx-ray14", root=str(write_nih(tmp_path / "nih", kaggle_parts=False)))
    assert sum(len(ds.split(s)) for s in ds.split_names) == 20


# ------------------------------------------------------------------------------ CheXpert
def write_chexpert(parent: Path, folder: str = "CheXpert-v1.0-small") -> Path:
    """train.csv/valid.csv with Path values prefixed by the edition folder, and the JPEGs."""
    root = parent / folder
    values = ["1.0", "0.0", "-1.0", "", "1.0", "0.0"]
    lines = {"train": [], "valid": []}
    for split, patients in (("train", range(1, 9)), ("valid", range(64541, 64545))):
        for i, p in enumerate(patients):
            for view, fl, appa in (("view1_frontal", "Frontal", "AP"), ("view2_lateral", "Lateral", "")):
                rel = f"{split}/patient{p:05d}/study1/{view}.jpg"
                write_image(root / rel, p * 3 + len(view))
                labels = [values[(i + k) % len(values)] for k in range(14)]
                if split == "valid":
                    labels = ["1.0" if v in ("1.0", "-1.0") else "0.0" for v in labels]
                lines[split].append(f"{folder}/{rel},Female,{40 + i},{fl},{appa}," + ",".join(labels))
    for split, rows in lines.items():
        (root / f"{split}.csv").write_text(CHEXPERT_HEADER + "\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore"])
def test_chexpert_uncertainty_policies_and_frontal_only(registry, tmp_path, policy):
    root = write_chexpert(tmp_path)
    ds = load(registry, "chexpert/small", root=str(root), uncertain=policy)
    assert ds.classes == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    ids = [i for s in ds.split_names for i in ds.split(s).ids]
    assert all(i.endswith("view1_frontal.jpg") for i in ids)  # frontal only by default
    assert all(i.startswith(("train/", "valid/")) for i in ids)  # edition prefix stripped
    assert sorted(ds.split("test").ids) == [
        f"valid/patient{p:05d}/study1/view1_frontal.jpg" for p in range(64541, 64545)
    ]
    # patient00001 (i = 0): Atelectasis is observation 8 -> values[(0 + 8) % 6] = "-1.0" (uncertain)
    by_id = {i: y for s in ("train", "val") for i, y in zip(ds.split(s).ids, ds.split(s).labels.tolist())}
    key = "train/patient00001/study1/view1_frontal.jpg"
    if policy == "ignore":
        assert key not in by_id and ds.info["left_out_uncertain"] > 0
    else:
        assert by_id[key][0] == (1 if policy == "ones" else 0)
    assert ds.info["uncertain"] == policy


def test_chexpert_all_observations_and_laterals(registry, tmp_path):
    root = write_chexpert(tmp_path, "CheXpert-v1.0")
    ds = load(registry, "chexpert/full-14", root=str(root), frontal_only=False, val_fraction=0.25)
    assert_well_formed(ds, "multilabel", 14)
    assert sum(len(ds.split(s)) for s in ds.split_names) == 24
    patients = {s: {i.split("/")[1] for i in ds.split(s).ids} for s in ds.split_names}
    assert patients["train"].isdisjoint(patients["val"])


# ------------------------------------------------------------------------------ APTOS 2019
def write_aptos(root: Path, n: int = 20) -> Path:
    codes = [f"{0x1A2B3C4D5E6F + i:012x}" for i in range(n)]
    for i, code in enumerate(codes):
        write_image(root / "train_images" / f"{code}.png", i, mode="RGB")
    (root / "train.csv").write_text(
        "id_code,diagnosis\n" + "\n".join(f"{c},{i % 5}" for i, c in enumerate(codes)) + "\n"
    )
    (root / "test.csv").write_text("id_code\n" + "ffffffffffff\n")
    return root


def test_aptos_ordinal_seeded_split(registry, tmp_path):
    root = write_aptos(tmp_path / "aptos")
    ds = load(registry, "aptos/2019", root=str(root))
    assert_well_formed(ds, "ordinal", 5)
    assert ds.split("train").images[0].shape[2] == 3
    again = load(registry, "aptos/2019", root=str(root))
    assert again.split("test").ids == ds.split("test").ids and again.fingerprint == ds.fingerprint
    other = load(registry, "aptos/2019", root=str(root), split_seed=1)
    assert other.info["split_seed"] == 1 and other.fingerprint != ds.fingerprint


# ------------------------------------------------------------------------------ ISIC 2019
def write_isic(root: Path, nested: bool = True) -> Path:
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    truth, meta = [], []
    folder = root / "ISIC_2019_Training_Input" / ("ISIC_2019_Training_Input" if nested else "")
    for i in range(24):
        image = f"ISIC_{i:07d}" + ("_downsampled" if i % 7 == 3 else "")
        cls = i % 3 if i < 21 else 3 + i % 5
        truth.append(image + "," + ",".join("1.0" if k == cls else "0.0" for k in range(8)) + ",0.0")
        lesion = f"HAM_{i // 2:07d}" if i < 20 else ""  # two images per lesion; some without a lesion id
        meta.append(f"{image},{30 + i},anterior torso,{lesion},{'male' if i % 2 else 'female'}")
        write_image(folder / f"{image}.jpg", i, mode="RGB")
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text(
        "image," + ",".join(classes) + ",UNK\n" + "\n".join(truth) + "\n"
    )
    (root / "ISIC_2019_Training_Metadata.csv").write_text(
        "image,age_approx,anatom_site_general,lesion_id,sex\n" + "\n".join(meta) + "\n"
    )
    return root


@pytest.mark.parametrize("nested", [True, False])
def test_isic_lesion_grouped_split(registry, tmp_path, nested):
    ds = load(registry, "isic/2019", root=str(write_isic(tmp_path / "isic", nested)))
    assert_well_formed(ds, "multiclass", 8)
    lesions = {s: set(ds.split(s).groups) for s in ds.split_names}
    assert lesions["train"].isdisjoint(lesions["test"]) and lesions["train"].isdisjoint(lesions["val"])
    assert "HAM_0000000" in set().union(*lesions.values())
    ids = [i for s in ds.split_names for i in ds.split(s).ids]
    assert "ISIC_0000003_downsampled.jpg" in ids


# ------------------------------------------------------------------------------ CBIS-DDSM
def write_cbis(root: Path, kind: str = "mass", nbia_layout: bool = True) -> Path:
    """The case-description CSVs plus DICOM folders (NBIA descriptive names, or the CSV's UID paths)."""
    header = MASS_HEADER if kind == "mass" else CALC_HEADER
    prefix = "Mass" if kind == "mass" else "Calc"
    pathologies = [
        "MALIGNANT",
        "BENIGN",
        "BENIGN_WITHOUT_CALLBACK",
        "MALIGNANT",
        "BENIGN",
        "MALIGNANT",
        "BENIGN",
        "MALIGNANT",
    ]
    for split, part, patients in (("Training", "train", range(1, 9)), ("Test", "test", range(20, 24))):
        rows = []
        for k, p in enumerate(patients):
            for view in ("CC", "MLO"):
                case = f"{prefix}-{split}_P_{p:05d}_LEFT_{view}"
                full = f"{case}/1.3.6.1.4.1.9590.100.1.2.{p}{k}/1.3.6.1.4.1.9590.100.1.2.{p}{k}1/000000.dcm"
                crop = f"{case}_1/1.3.6.1.4.1.9590.100.1.2.{p}{k}2/1.3.6.1.4.1.9590.100.1.2.{p}{k}3/000000.dcm"
                mask = f"{case}_1/1.3.6.1.4.1.9590.100.1.2.{p}{k}2/1.3.6.1.4.1.9590.100.1.2.{p}{k}3/000001.dcm"
                pathology = pathologies[k % len(pathologies)]
                desc = "IRREGULAR,SPICULATED" if kind == "mass" else "PLEOMORPHIC,SEGMENTAL"
                rows.append(f'P_{p:05d},3,LEFT,{view},1,{kind},{desc},4,{pathology},4,{full},{crop},"{mask}\n"')
                base = root / "CBIS-DDSM"
                if nbia_layout:
                    files = {
                        base
                        / case
                        / "07-20-2016-DDSM-NA-74994"
                        / "1.000000-full mammogram images-24515"
                        / "1-1.dcm": "CT_small.dcm",
                        base
                        / f"{case}_1"
                        / "08-07-2016-DDSM-NA-09887"
                        / "1.000000-ROI mask images-18269"
                        / "1-1.dcm": "CT_small.dcm",
                        base
                        / f"{case}_1"
                        / "08-07-2016-DDSM-NA-09887"
                        / "1.000000-cropped images-45231"
                        / "1-1.dcm": "MR_small.dcm",
                    }
                else:
                    files = {root / full: "CT_small.dcm", root / crop: "MR_small.dcm", root / mask: "CT_small.dcm"}
                for dest, src in files.items():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(dicom_file(src), dest)
        (root / f"{kind}_case_description_{part}_set.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("nbia_layout", [True, False])
def test_cbis_full_mammograms(registry, tmp_path, nbia_layout):
    ds = load(registry, "cbis-ddsm/mass", root=str(write_cbis(tmp_path / "cbis", "mass", nbia_layout)))
    assert_well_formed(ds, "binary", 2)
    labels = {i: y for s in ds.split_names for i, y in zip(ds.split(s).ids, ds.split(s).labels.tolist())}
    assert labels["Mass-Training_P_00001_LEFT_CC"] == 1  # MALIGNANT
    assert labels["Mass-Training_P_00003_LEFT_CC"] == 0  # BENIGN_WITHOUT_CALLBACK counts as benign
    assert {i.split("_P_")[0] for i in ds.split("test").ids} == {"Mass-Test"}
    assert ds.split("train").images[0].shape == (128, 128)  # the full image (CT_small stands in)


def test_cbis_roi_crops_found_in_nbia_layout(registry, tmp_path):
    ds = load(registry, "cbis-ddsm/calc-roi", root=str(write_cbis(tmp_path / "cbis", "calc")))
    assert_well_formed(ds, "binary", 2)
    assert all(i.endswith("_1") for s in ds.split_names for i in ds.split(s).ids)
    assert ds.split("test").images[0].shape == (64, 64)  # the crop (MR_small), not the mask


# ------------------------------------------------------------------------------ Montgomery / Shenzhen
def write_tb(parent: Path, folder: str, prefix: str, n: int = 14, masks: bool = False) -> Path:
    root = parent / folder
    for i in range(1, n + 1):
        name = f"{prefix}_{i:04d}_{i % 2}.png"
        write_image(root / "CXR_png" / name, i, size=(40, 48))
        (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (root / "ClinicalReadings" / name.replace(".png", ".txt")).write_text("Patient's Sex: F\nnormal\n")
        if masks:
            for side, x in (("leftMask", slice(22, 36)), ("rightMask", slice(4, 18))):
                m = np.zeros((48, 40), np.uint8)
                m[8:40, x] = 255
                (root / "ManualMask" / side).mkdir(parents=True, exist_ok=True)
                Image.fromarray(m).save(root / "ManualMask" / side / name)
    return root


def test_montgomery_labels_from_suffix_and_lung_masks(registry, tmp_path):
    write_tb(tmp_path, "MontgomerySet", "MCUCXR", masks=True)
    ds = load(registry, "tb/montgomery", root=str(tmp_path))  # the parent folder also works
    assert_well_formed(ds, "binary", 2)
    for s in ds.split_names:
        split = ds.split(s)
        for i, label in zip(split.ids, split.labels):
            assert int(i[-5]) == label
        mask = split.masks[0]
        assert mask.shape == (48, 40) and set(np.unique(mask)) == {0, 1, 2}
        assert (mask[:, 22:36] == 1).any() and (mask[:, 4:18] == 2).any()


def test_shenzhen(registry, tmp_path):
    root = write_tb(tmp_path, "ChinaSet_AllFiles", "CHNCXR", n=16)
    ds = load(registry, "tb/shenzhen", root=str(root))
    assert_well_formed(ds, "binary", 2)
    assert ds.split("train").masks is None


# ------------------------------------------------------------------------------ brain MRI, SARS-CoV-2 CT
def write_brain(root: Path, old_names: bool = False) -> Path:
    classes = (
        ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]
        if old_names
        else ["glioma", "meningioma", "notumor", "pituitary"]
    )
    for folder, tag, n in (("Training", "Tr", 6), ("Testing", "Te", 2)):
        for c in classes:
            for i in range(n):
                write_image(root / folder / c / f"{tag}-{c[:2]}_{i:04d}.jpg", hash((folder, c, i)) % 1000)
    return root


@pytest.mark.parametrize("old_names", [False, True])
def test_brain_tumor_mri(registry, tmp_path, old_names):
    ds = load(registry, "brain-tumor-mri", root=str(write_brain(tmp_path / "brain", old_names)))
    assert_well_formed(ds, "multiclass", 4)
    assert len(ds.split("test")) == 8 and all(i.startswith("Testing/") for i in ds.split("test").ids)
    assert sorted(set(ds.split("test").labels.tolist())) == [0, 1, 2, 3]


def write_sars(root: Path, n: int = 10) -> Path:
    for i in range(1, n + 1):
        write_image(root / "COVID" / f"Covid ({i}).png", i, mode="RGB")
        write_image(root / "non-COVID" / f"Non-Covid ({i}).png", 100 + i, mode="RGB")
    return root


def test_sars_cov2_ct(registry, tmp_path):
    ds = load(registry, "sars-cov-2-ct", root=str(write_sars(tmp_path / "sars")))
    assert_well_formed(ds, "binary", 2)
    labels = {i: y for s in ds.split_names for i, y in zip(ds.split(s).ids, ds.split(s).labels.tolist())}
    assert labels["COVID/Covid (1).png"] == 1 and labels["non-COVID/Non-Covid (1).png"] == 0
    assert "warning" in ds.info


# ------------------------------------------------------------------------------ generic: folder, CSV, DICOM, HF
def test_image_folder_with_split_folders(registry, tmp_path):
    root = tmp_path / "chest_xray"
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for c in ("NORMAL", "PNEUMONIA"):
            for i in range(n):
                write_image(root / split / c / f"{c}-{i}.jpeg", hash((split, c, i)) % 997)
    ds = load(registry, "folder/binary/kermany", root=str(root))
    assert_well_formed(ds, "binary", 2)
    assert ds.classes == ("NORMAL", "PNEUMONIA")
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [10, 4, 6]
    assert ds.info["split_method"] == "official"


def test_image_folder_class_order_option_and_multiclass(registry, tmp_path):
    root = tmp_path / "cells"
    for c in ("b", "a", "c"):
        for i in range(6):
            write_image(root / c / f"{i}.png", hash((c, i)) % 991)
    ds = load(registry, "folder/multiclass/cells", root=str(root), classes=["c", "b", "a"])
    assert ds.classes == ("c", "b", "a")
    labels = {i: y for s in ds.split_names for i, y in zip(ds.split(s).ids, ds.split(s).labels.tolist())}
    assert labels["c/0.png"] == 0 and labels["a/0.png"] == 2


def write_manifest(root: Path, rows: list[str], header: str = "path,label,patient_id") -> Path:
    for i, row in enumerate(rows):
        write_image(root / row.split(",")[0], i)
    path = root / "manifest.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_manifest_single_label_grouped_by_patient(registry, tmp_path):
    rows = [f"img/{i}.png,{'pneumonia' if i % 2 else 'normal'},P{i // 2}" for i in range(24)]
    ds = load(registry, "csv/binary/mine", csv_file=str(write_manifest(tmp_path / "m", rows)))
    assert_well_formed(ds, "binary", 2)
    assert ds.classes == ("normal", "pneumonia")
    assert ds.info["grouped_by"] == "patient_id"


def test_csv_manifest_multilabel_names_and_split_column(registry, tmp_path):
    names = ["a|b", "", "c", "a", "b|c", "a|b|c"]
    rows = [f"x/{i}.png,{names[i % 6]},{['train', 'val', 'test'][i % 3]}" for i in range(12)]
    path = write_manifest(tmp_path / "m", rows, header="path,labels,split")
    ds = load(registry, "csv/multilabel/mine", csv_file=str(path), label_column="labels")
    assert_well_formed(ds, "multilabel", 3)
    assert ds.info["split_method"] == "official"
    first = dict(zip(ds.split("train").ids, ds.split("train").labels.tolist()))["x/0.png"]
    assert first == [1, 1, 0]


def test_csv_manifest_multilabel_columns(registry, tmp_path):
    rows = [f"y/{i}.png,{i % 2},{(i // 2) % 2},S{i}" for i in range(20)]
    path = write_manifest(tmp_path / "m", rows, header="path,effusion,edema,patient_id")
    ds = load(registry, "csv/multilabel/cols", csv_file=str(path), label_columns=["effusion", "edema"])
    assert ds.classes == ("effusion", "edema") and ds.split("test").labels.shape[1] == 2


DICOMS = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPGExtended.dcm",
    "MR_small_RLE.dcm",
    "emri_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "693_J2KI.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG2000.dcm",
]
# by PatientID: 1CT1 train; 4MR1 (files 1, 3, 5) train; 8NM1 (2, 8) val; emri (no id) train; CQ500, ID1 test
SPLITS_BY_PATIENT = ["train", "train", "val", "train", "train", "train", "test", "test", "val"]


def write_dicom_folder(root: Path) -> list[str]:
    rels = []
    for i, name in enumerate(DICOMS):
        rel = f"series{i % 3}/{name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dicom_file(name), root / rel)
        rels.append(rel)
    return rels


def test_dicom_folder_by_path_with_split_column(registry, tmp_path):
    root = tmp_path / "dcm"
    rels = write_dicom_folder(root)
    rows = [f"{r},{i % 2},{SPLITS_BY_PATIENT[i]}" for i, r in enumerate(rels)]
    (root / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    ds = load(registry, "dicom/binary/mixed", root=str(root), classes=["no", "yes"], split_file=None)
    assert_well_formed(ds, "binary", 2)
    assert ds.info["grouped_by"] == "DICOM PatientID"
    for s in ds.split_names:  # every DICOM decodes: JPEG, JPEG-LS, JPEG 2000, RLE, multi-frame, colour
        for image in ds.split(s).images:
            assert image.dtype == np.uint8


def test_dicom_folder_by_sop_instance_uid(registry, tmp_path):
    import pydicom

    root = tmp_path / "dcm"
    rels = write_dicom_folder(root)
    uids = [pydicom.dcmread(root / r, stop_before_pixels=True).SOPInstanceUID for r in rels]
    first = {u: i for i, u in reversed(list(enumerate(uids)))}  # transcoded copies share a SOP UID
    rows = [f"{u},{'b' if i % 2 else 'a'},{SPLITS_BY_PATIENT[i]}" for u, i in first.items()]
    assert len(rows) < len(rels)
    (tmp_path / "truth.csv").write_text("SOPInstanceUID,finding,split\n" + "\n".join(rows) + "\n")
    ds = load(
        registry,
        "dicom/binary/by-uid",
        root=str(root),
        labels_file=str(tmp_path / "truth.csv"),
        key_column="SOPInstanceUID",
        label_column="finding",
    )
    assert ds.classes == ("a", "b")
    # every file of a listed UID is a sample with that row's label
    assert sorted(i for s in ds.split_names for i in ds.split(s).ids) == sorted(rels)


def _hf_dataset(with_val: bool = True):
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "dx": datasets.ClassLabel(names=["benign", "malignant"]),
            "patient": datasets.Value("string"),
        }
    )

    def part(n, offset):
        return datasets.Dataset.from_dict(
            {
                "img": [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n)],
                "dx": [i % 2 for i in range(n)],
                "patient": [f"p{offset + i // 2}" for i in range(n)],
            },
            features=features,
        )

    parts = {"train": part(20, 0), "test": part(6, 100)}
    if with_val:
        parts["validation"] = part(4, 200)
    return datasets.DatasetDict(parts)


def test_hf_saved_dataset_offline(registry, tmp_path):
    _hf_dataset().save_to_disk(str(tmp_path / "saved"))
    ds = load(registry, "hf/binary/org/skin", path=str(tmp_path / "saved"), image_column="img", label_column="dx")
    assert_well_formed(ds, "binary", 2)
    assert ds.classes == ("benign", "malignant")
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [20, 4, 6]
    assert ds.split("val").images[0].shape == (16, 16, 3)


def test_hf_hub_id_missing_val_carved_by_patient(registry, tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, revision=None, **kw):
        calls.append((path, name, revision))
        return _hf_dataset(with_val=False)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load(
        registry,
        "hf/binary/org/skin",
        image_column="img",
        label_column="dx",
        patient_column="patient",
        revision="main",
        val_fraction=0.25,
    )
    assert calls == [("org/skin", None, "main")]
    assert_well_formed(ds, "binary", 2)
    assert set(ds.split("train").groups).isdisjoint(set(ds.split("val").groups))
    assert ds.info["split_file"] and Path(ds.info["split_file"]).is_file()


def test_hf_local_image_folder(registry, tmp_path):
    root = tmp_path / "hfimgs"
    for split, n in (("train", 6), ("validation", 2), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                write_image(root / split / c / f"{i}.png", hash((split, c, i)) % 983, mode="RGB")
    ds = load(registry, "hf/binary/local/pets", path=str(root))
    assert ds.classes == ("cat", "dog") and [len(ds.split(s)) for s in ("train", "val", "test")] == [12, 4, 4]


def test_user_error_for_bad_family_member(registry):
    with pytest.raises(UserError, match="task one of"):
        registry.get("dataset", "folder/regression/x")
