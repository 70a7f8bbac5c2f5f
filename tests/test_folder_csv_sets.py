"""The generic ``folder/``, ``csv/`` and ``dicom/`` sets on real image files: patient grouping by
default (and saying so when there is none), duplicate manifest rows, and class names in records."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfm import UserError
from medfm.api import RunConfig, Runner
from medfm.records import load_record
from medfm_plugins.datasets.image_folder import DEFAULT_GROUP_REGEX
from medfm_plugins.datasets.manifest import PatientGroupingWarning


def write_png(path: Path, seed: int, size: tuple[int, int] = (24, 20)) -> Path:
    """A small random grey PNG (or JPEG, by suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L").save(path)
    return path


@pytest.fixture
def registry(registry_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    return registry_factory()


def load(registry, name: str, **options):
    spec = registry.get("dataset", name)
    return spec.load(spec, **options)


def load_quietly(registry, name: str, **options):
    """Load and fail on any grouping warning (the data set is expected to be grouped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PatientGroupingWarning)
        return load(registry, name, **options)


def split_of_patient(ds) -> dict[str, str]:
    """Patient -> split; fails when a patient is in two splits or a split has no groups."""
    owner: dict[str, str] = {}
    for name in ds.split_names:
        split = ds.split(name)
        assert split.groups is not None, f"split {name} is not grouped"
        for g in split.groups:
            assert owner.setdefault(str(g), name) == name, f"patient {g} is in {owner[g]} and {name}"
    return owner


def patient_of_image(ds) -> dict[str, str]:
    return {i: str(g) for s in ds.split_names for i, g in zip(ds.split(s).ids, ds.split(s).groups)}


def split_files(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.rglob("*") if p.is_file()) if split_dir.exists() else []


# ------------------------------------------------------------------------------ folder/: default grouping
def write_kermany(root: Path, patients: int = 12) -> dict[str, str]:
    """Kermany's names: two images per patient; ``{relative path: patient}``."""
    written = {}
    for p in range(1, patients + 1):
        for rel, patient in (
            (f"PNEUMONIA/person{p}_bacteria_{2 * p}.jpeg", f"person{p}"),
            (f"PNEUMONIA/person{p}_virus_{2 * p + 1}.jpeg", f"person{p}"),
            (f"NORMAL/NORMAL2-IM-{p:04d}-0001.jpeg", f"NORMAL2-IM-{p:04d}"),
            (f"NORMAL/NORMAL2-IM-{p:04d}-0002.jpeg", f"NORMAL2-IM-{p:04d}"),
        ):
            write_png(root / rel, len(written))
            written[rel] = patient
    return written


def test_kermany_style_names_are_grouped_by_patient_by_default(registry, tmp_path):
    written = write_kermany(tmp_path / "kermany")
    ds = load_quietly(registry, "folder/binary/kermany", root=str(tmp_path / "kermany"))
    assert ds.info["grouped_by"] == DEFAULT_GROUP_REGEX
    assert ds.info["groups"] == 24
    assert patient_of_image(ds) == written  # person1_bacteria_2 and person1_virus_3 are one patient
    owner = split_of_patient(ds)
    assert len(owner) == 24 and "warning" not in ds.info
    assert ds.classes == ("NORMAL", "PNEUMONIA")


def test_patient_name_suffix_styles_and_a_patient_with_one_image(registry, tmp_path):
    root = tmp_path / "set"
    for p in range(10):
        write_png(root / "a" / f"P{p:02d}_1.png", p)
        write_png(root / "a" / f"P{p:02d}_2.png", 100 + p)
        write_png(root / "b" / f"case{p}-1.png", 200 + p)
        if p % 2:
            write_png(root / "b" / f"case{p}-2.png", 300 + p)
    ds = load_quietly(registry, "folder/binary/suffixes", root=str(root))
    patients = patient_of_image(ds)
    assert patients["a/P03_1.png"] == patients["a/P03_2.png"] == "P03"
    assert patients["b/case3-1.png"] == patients["b/case3-2.png"] == "case3"
    assert patients["b/case2-1.png"] == "case2"
    assert ds.info["groups"] == 20
    split_of_patient(ds)


def test_per_patient_folders_are_grouped_by_default(registry, tmp_path):
    root = tmp_path / "folders"
    expected = {}
    for c in ("benign", "malignant"):
        for p in range(8):
            for k in range(3):
                rel = f"{c}/{c[0]}{p}/{k}.png"
                write_png(root / rel, len(expected))
                expected[rel] = f"{c[0]}{p}"
    ds = load_quietly(registry, "folder/binary/folders", root=str(root))
    assert ds.info["grouped_by"] == "patient folder"
    assert ds.info["groups"] == 16
    assert patient_of_image(ds) == expected
    split_of_patient(ds)


def test_per_patient_folders_inside_split_folders_carve_val_by_patient(registry, tmp_path):
    root = tmp_path / "splits"
    for split, patients in (("train", range(0, 12)), ("test", range(12, 16))):
        for c in ("NORMAL", "PNEUMONIA"):
            for p in patients:
                for k in range(2):
                    write_png(root / split / c / f"pt{c[0]}{p}" / f"scan{k}.png", hash((split, c, p, k)) % 997)
    ds = load_quietly(registry, "folder/binary/split-folders", root=str(root))
    assert ds.info["grouped_by"] == "patient folder" and ds.info["groups"] == 32
    assert "val carved" in ds.info["split_method"]
    split_of_patient(ds)


def test_no_patient_ids_warns_and_treats_each_image_as_its_own_patient(registry, tmp_path):
    root = tmp_path / "plain"
    for c in ("a", "b"):
        for i in range(10):
            write_png(root / c / f"{i}.png", hash((c, i)) % 991)
    with pytest.warns(PatientGroupingWarning) as caught:
        ds = load(registry, "folder/binary/plain", root=str(root))
    (message,) = [str(w.message) for w in caught if issubclass(w.category, PatientGroupingWarning)]
    assert message.startswith("folder/binary/plain: ")
    assert "each of the 20 images is treated as its own patient" in message
    assert "set the group_regex option" in message and "group_regex = false" in message
    assert "\n" not in message
    assert ds.info["grouped_by"] is None and ds.info["groups"] == 20 and ds.info["warning"] == message
    assert all(ds.split(s).groups is None for s in ds.split_names)


@pytest.mark.parametrize(
    "names",
    [
        ["p{i:02d}_1.png"],  # an id and an index, but one image per patient: no real grouping
        ["{c}-{i}.png"],  # the class name and an index: the "patient" would be the class
        ["{c}1_{i}.png"],  # a class-wide prefix with a digit: one group per class, not patients
    ],
)
def test_default_grouping_that_finds_no_patients_is_not_used(registry, tmp_path, names):
    root = tmp_path / "set"
    for c in ("covid", "normal"):
        for i in range(10):
            write_png(root / c / names[0].format(c=c, i=i + (100 if c == "normal" else 0)), hash((c, i)) % 991)
    with pytest.warns(PatientGroupingWarning, match="each of the 20 images is treated as its own patient"):
        ds = load(registry, "folder/binary/no-patients", root=str(root))
    assert ds.info["grouped_by"] is None and ds.info["groups"] == 20


def test_group_regex_overrides_the_default_and_false_turns_grouping_off(registry, tmp_path):
    root = tmp_path / "kermany"
    write_kermany(root)
    ds = load_quietly(registry, "folder/binary/kermany", root=str(root), group_regex=r"(person\d+|IM-\d{3})")
    assert ds.info["grouped_by"] == r"(person\d+|IM-\d{3})"
    patients = patient_of_image(ds)
    assert patients["NORMAL/NORMAL2-IM-0001-0001.jpeg"] == patients["NORMAL/NORMAL2-IM-0009-0002.jpeg"] == "IM-000"
    assert ds.info["groups"] == 12 + 2  # person1..12, IM-000 and IM-001
    split_of_patient(ds)

    for off in (False, ""):
        with warnings.catch_warnings():
            warnings.simplefilter("error", PatientGroupingWarning)  # turned off on purpose: no warning
            ds = load(registry, "folder/binary/kermany", root=str(root), group_regex=off)
        assert ds.info["grouped_by"] is None and ds.info["groups"] == 48
        assert all(ds.split(s).groups is None for s in ds.split_names)

    with pytest.raises(UserError, match=r"group_regex 'subject.*' matches none of the 48 image paths"):
        load(registry, "folder/binary/kermany", root=str(root), group_regex=r"subject\d+")
    with pytest.raises(UserError, match="group_regex must be a regular expression"):
        load(registry, "folder/binary/kermany", root=str(root), group_regex=True)


def test_patients_in_two_published_split_folders_keep_the_published_split(registry, tmp_path):
    root = tmp_path / "published"
    for split, patients in (("train", range(1, 13)), ("test", range(10, 16))):  # person10-12 in both
        for p in patients:
            for k, rel in enumerate(
                (f"PNEUMONIA/person{p}_bacteria_1.jpeg", f"PNEUMONIA/person{p}_virus_2.jpeg")
                + (f"NORMAL/IM-{p:04d}-0001.jpeg", f"NORMAL/IM-{p:04d}-0002.jpeg")
            ):
                write_png(root / split / rel, hash((split, p, k)) % 997)
    with pytest.warns(PatientGroupingWarning, match=r"6 patient\(s\) .* have images in two split folders"):
        ds = load(registry, "folder/binary/published", root=str(root))
    assert ds.info["patients_in_two_split_folders"] == 6
    assert ds.info["grouped_by"] == DEFAULT_GROUP_REGEX
    assert sum(len(ds.split(s)) for s in ds.split_names) == 18 * 4
    owner = split_of_patient(ds)  # val is carved from train by patient
    assert owner["train/person10"] in ("train", "val") and owner["test/person10"] == "test"


# ------------------------------------------------------------------------------ csv/: patient column
def write_manifest(root: Path, header: str, rows: list[str]) -> Path:
    for i, row in enumerate(rows):
        if not (root / row.split(",")[0]).exists():
            write_png(root / row.split(",")[0], i)
    path = root / "manifest.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("column", ["patient_id", "patient", "PatientID", "subject", "subject_id", "Subject_ID"])
def test_csv_common_patient_column_names_group_the_splits(registry, tmp_path, column):
    rows = [f"img/{i}.png,{i % 2},S{i // 4}" for i in range(48)]
    path = write_manifest(tmp_path / "m", f"path,label,{column}", rows)
    ds = load_quietly(registry, "csv/binary/mine", csv_file=str(path))
    assert ds.info["grouped_by"] == column and ds.info["groups"] == 12
    owner = split_of_patient(ds)
    assert set(owner) == {f"S{p}" for p in range(12)}


def test_csv_without_patient_column_warns_and_patient_column_false_is_silent(registry, tmp_path):
    rows = [f"img/{i}.png,{i % 2},{i}" for i in range(20)]
    path = write_manifest(tmp_path / "m", "path,label,age", rows)
    with pytest.warns(PatientGroupingWarning) as caught:
        ds = load(registry, "csv/binary/nopatients", csv_file=str(path))
    (message,) = [str(w.message) for w in caught if issubclass(w.category, PatientGroupingWarning)]
    assert message.startswith("csv/binary/nopatients: ")
    assert "each of the 20 images is treated as its own patient" in message and "patient_column" in message
    assert ds.info["grouped_by"] is None and ds.info["groups"] == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error", PatientGroupingWarning)
        ds = load(registry, "csv/binary/nopatients", csv_file=str(path), patient_column=False)
    assert ds.info["grouped_by"] is None and ds.info["groups"] == 20
    ds = load_quietly(registry, "csv/binary/nopatients", csv_file=str(path), patient_column="age")
    assert ds.info["grouped_by"] == "age"


# ------------------------------------------------------------------------------ csv/, dicom/: repeated rows
@pytest.mark.parametrize(
    "first,second,expected",
    [
        (
            "images/a.png,0,P1",
            "images/a.png,1,P9",
            r"manifest\.csv lists images/a\.png on lines 3 and 7 with different labels \(0 and 1\)",
        ),
        (
            "images/a.png,1,P1",
            "images/a.png,1,P1",
            r"manifest\.csv lists images/a\.png on lines 3 and 7 with the same label \(1\).*remove one",
        ),
        (
            "images/a.png,normal,P1",
            "./images/a.png,pneumonia,P1",
            r"manifest\.csv lists images/a\.png \(as \./images/a\.png on line 7\) on lines 3 and 7 "
            r"with different labels \(normal and pneumonia\)",
        ),
    ],
)
def test_csv_image_listed_twice_is_an_error_before_any_split_is_written(registry, tmp_path, first, second, expected):
    named = "normal" in first
    labels = ("normal", "pneumonia") if named else ("0", "1")
    rows = [f"images/{i}.png,{labels[i % 2]},P{i}" for i in range(30)]
    rows[1], rows[5] = first, second  # lines 3 and 7 (line 1 is the header)
    path = write_manifest(tmp_path / "m", "path,label,patient_id", rows)
    split_dir = tmp_path / "splits"
    with pytest.raises(UserError, match=expected) as exc:
        load(registry, "csv/binary/dupes", csv_file=str(path), split_dir=str(split_dir))
    message = str(exc.value)
    assert "\n" not in message and message.startswith("csv/binary/dupes: ") and str(path) in message
    assert split_files(split_dir) == []
    # removing the repeated row loads, and only then a split file is written
    path.write_text("\n".join(line for n, line in enumerate(path.read_text().splitlines(), 1) if n != 7) + "\n")
    load(registry, "csv/binary/dupes", csv_file=str(path), split_dir=str(split_dir))
    assert len(split_files(split_dir)) == 1


def test_dicom_labels_csv_listing_a_file_twice_is_an_error(registry, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    source = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    if not source.is_file():
        pytest.skip("pydicom's CT_small.dcm is not installed")
    root = tmp_path / "dcm"
    root.mkdir()
    for i in range(6):
        shutil.copyfile(source, root / f"s{i}.dcm")
    rows = [f"s{i}.dcm,{i % 2}" for i in range(6)] + ["s2.dcm,1"]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    split_dir = tmp_path / "splits"
    with pytest.raises(
        UserError, match=r"labels\.csv lists s2\.dcm on lines 4 and 8 with different labels \(0 and 1\)"
    ):
        load(registry, "dicom/binary/dupes", root=str(root), split_dir=str(split_dir))
    assert split_files(split_dir) == []


# ------------------------------------------------------------------------------ classes in real records
def test_records_of_folder_and_csv_sets_name_their_classes(registry, tmp_path):
    folder = tmp_path / "xray"
    write_kermany(folder, patients=8)
    rows = [f"img/{i}.png,{('cyst', 'stone', 'tumour')[i % 3]},P{i // 3}" for i in range(36)]
    csv_file = write_manifest(tmp_path / "kidney", "path,label,patient", rows)
    cfg = RunConfig(
        backbones=["random/test_vit@64"],
        datasets=["folder/binary/xray", "csv/multiclass/kidney"],
        protocols=["knn"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "lb.md"),
        bootstrap=20,
        device="cpu",
    )
    cfg.options["dataset"]["folder/binary/xray"] = {"root": str(folder), "split_dir": str(tmp_path / "splits")}
    cfg.options["dataset"]["csv/multiclass/kidney"] = {"csv_file": str(csv_file), "split_dir": str(tmp_path / "s2")}
    cfg.options["protocol"]["knn"] = {"k_grid": [3]}
    outcomes = Runner(registry, cfg).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    records = {o.cell.dataset.name: load_record(o.record_path) for o in outcomes}
    xray, kidney = records["folder/binary/xray"]["dataset"], records["csv/multiclass/kidney"]["dataset"]
    assert xray["classes"] == ["NORMAL", "PNEUMONIA"] and xray["info"]["classes"] == ["NORMAL", "PNEUMONIA"]
    assert kidney["classes"] == ["cyst", "stone", "tumour"] and kidney["info"]["classes"] == kidney["classes"]
    assert xray["info"]["grouped_by"] == DEFAULT_GROUP_REGEX and xray["info"]["groups"] == 16
    assert kidney["info"]["grouped_by"] == "patient" and kidney["info"]["groups"] == 12
    on_disk = json.loads(Path(outcomes[0].record_path).read_text())
    assert on_disk["dataset"]["classes"] == ["NORMAL", "PNEUMONIA"]
