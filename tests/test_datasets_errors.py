"""Bad input gives one-line user errors that name the problem; splits are grouped, seeded and recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_datasets_plugins import (
    CHEXPERT_HEADER,
    load,
    write_aptos,
    write_cbis,
    write_chexpert,
    write_isic,
    write_manifest,
    write_nih,
)

from medfm import UserError, cli
from medfm.decode import DecodeError
from medfm.registry import Entry
from medfm.splits import assign_splits


@pytest.fixture
def registry(registry_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    return registry_factory()


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message, message
    return message


@pytest.mark.parametrize(
    "name,expected",
    [
        ("nih/chestx-ray14", "Data_Entry_2017_v2020.csv"),
        ("chexpert/small", "train.csv"),
        ("chexpert/full-14", "CheXpert-v1.0 folder"),
        ("aptos/2019", "train_images/<id_code>.png"),
        ("isic/2019", "ISIC_2019_Training_GroundTruth.csv"),
        ("cbis-ddsm/mass", "mass_case_description_train_set.csv"),
        ("cbis-ddsm/calc-roi", "calc_case_description_test_set.csv"),
        ("tb/montgomery", "MCUCXR_NNNN"),
        ("tb/shenzhen", "CHNCXR_NNNN"),
        ("brain-tumor-mri", "Training/<class>"),
        ("sars-cov-2-ct", "non-COVID"),
        ("folder/binary/x", "<root>/<class>/<image>"),
        ("dicom/binary/x", "labels.csv"),
        ("medmnist/breastmnist", "breastmnist.npz"),
    ],
)
def test_missing_root_is_one_line_with_the_layout(registry, tmp_path, name, expected):
    with pytest.raises(UserError) as exc:
        load(registry, name, root=str(tmp_path / "absent"))
    message = one_line(exc)
    assert str(tmp_path / "absent") in message and expected in message and "expected" in message


def test_missing_image_fails_naming_file_or_is_skipped_and_counted(registry, tmp_path):
    root = write_aptos(tmp_path / "aptos")
    gone = sorted((root / "train_images").iterdir())[3]
    gone.unlink()
    with pytest.raises(UserError) as exc:
        load(registry, "aptos/2019", root=str(root))
    message = one_line(exc)
    assert gone.name in message and "train.csv, line" in message and 'on_error = "skip"' in message
    ds = load(registry, "aptos/2019", root=str(root), on_error="skip")
    assert ds.info["on_error"] == "skip" and ds.info["skipped"] == 1
    assert ds.info["skipped_files"][0]["file"].endswith(gone.name)
    assert sum(len(ds.split(s)) for s in ds.split_names) == 19


def test_unreadable_image_fails_at_decode_or_is_skipped(registry, tmp_path):
    root = write_aptos(tmp_path / "aptos")
    broken = sorted((root / "train_images").iterdir())[5]
    broken.write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    ds = load(registry, "aptos/2019", root=str(root))
    split = next(s for s in ds.split_names if f"train_images/{broken.name}" in ds.split(s).ids)
    index = ds.split(split).ids.index(f"train_images/{broken.name}")
    with pytest.raises(DecodeError) as exc:
        ds.split(split).images[index]
    assert broken.name in one_line(exc)
    skipped = load(registry, "aptos/2019", root=str(root), on_error="skip")
    assert skipped.info["skipped"] == 1 and "cannot decode" in skipped.info["skipped_files"][0]["reason"]
    assert skipped.fingerprint != ds.fingerprint


def test_unknown_on_error_and_unknown_option(registry, tmp_path):
    root = write_aptos(tmp_path / "aptos")
    with pytest.raises(UserError, match="on_error must be one of"):
        load(registry, "aptos/2019", root=str(root), on_error="ignore")
    with pytest.raises(UserError, match="unknown option 'roots'"):
        load(registry, "aptos/2019", roots=str(root))


def _rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (("id_code,diagnosis", "id_code,grade"), r"train.csv, line 1: missing column 'diagnosis'"),
        ((",3\n", ",7\n"), r"train.csv, line 5, column 'diagnosis': unknown label '7'"),
        ((",3\n", ",\n"), r"train.csv, line 5, column 'diagnosis': is empty or NaN"),
        ((",3\n", ",NaN\n"), r"train.csv, line 5, column 'diagnosis': is empty or NaN"),
        ((",3\n", ",three\n"), r"train.csv, line 5, column 'diagnosis': unknown label 'three'"),
    ],
)
def test_aptos_csv_errors_name_file_line_and_column(registry, tmp_path, edit, pattern):
    root = write_aptos(tmp_path / "aptos")
    _rewrite(root / "train.csv", *edit)
    with pytest.raises(UserError, match=pattern) as exc:
        load(registry, "aptos/2019", root=str(root))
    assert str(root / "train.csv") in one_line(exc)


def test_nih_unknown_finding(registry, tmp_path):
    root = write_nih(tmp_path / "nih")
    _rewrite(root / "Data_Entry_2017_v2020.csv", "Cardiomegaly|Emphysema", "Cardiomegaly|Covid")
    with pytest.raises(UserError, match=r"line 6, column 'Finding Labels': unknown label 'Covid'"):
        load(registry, "nih/chestx-ray14", root=str(root))


def test_chexpert_bad_value_and_missing_column(registry, tmp_path):
    root = write_chexpert(tmp_path)
    text = (root / "train.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[13] = "2.0"  # Atelectasis
    text[3] = ",".join(cells)
    (root / "train.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(UserError, match=r"train.csv, line 4, column 'Atelectasis': unknown label '2.0'"):
        load(registry, "chexpert/small", root=str(root))
    (root / "valid.csv").write_text(CHEXPERT_HEADER.replace(",Edema", ",Oedema") + "\n")
    (root / "train.csv").write_text(CHEXPERT_HEADER + "\n")
    with pytest.raises(UserError, match=r"line 1: missing column 'Edema'"):
        load(registry, "chexpert/small", root=str(root))


def test_isic_unk_and_non_one_hot(registry, tmp_path):
    root = write_isic(tmp_path / "isic")
    path = root / "ISIC_2019_Training_GroundTruth.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: -len("0.0")] + "1.0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"line 3, column 'UNK': unknown label"):
        load(registry, "isic/2019", root=str(root))
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("1.0", "0.0")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"line 3: needs exactly one 1.0"):
        load(registry, "isic/2019", root=str(root))


def test_cbis_unknown_pathology(registry, tmp_path):
    root = write_cbis(tmp_path / "cbis", "mass")
    _rewrite(root / "mass_case_description_test_set.csv", "BENIGN_WITHOUT_CALLBACK", "UNPROVEN")
    with pytest.raises(
        UserError,
        match=r"mass_case_description_test_set.csv, line \d+, column 'pathology': "
        r"unknown label 'UNPROVEN'",
    ):
        load(registry, "cbis-ddsm/mass", root=str(root))


def test_manifest_errors(registry, tmp_path):
    rows = [f"i/{k}.png,{'a' if k % 2 else 'b'},P{k}" for k in range(12)]
    path = write_manifest(tmp_path / "m", rows)
    with pytest.raises(UserError, match=r"manifest.csv, line 3, column 'label': unknown label 'a'; expected one of"):
        load(registry, "csv/binary/m", csv_file=str(path), classes=["b", "c"])
    with pytest.raises(UserError, match=r"line 1: missing column 'diagnosis'"):
        load(registry, "csv/binary/m", csv_file=str(path), label_column="diagnosis")
    _rewrite(path, "i/4.png,b,", "i/4.png,,")
    with pytest.raises(UserError, match=r"manifest.csv, line 6, column 'label': is empty or NaN"):
        load(registry, "csv/binary/m", csv_file=str(path))
    with pytest.raises(UserError, match="csv_file"):
        load(registry, "csv/binary/m")


def test_empty_split_is_an_error(registry, tmp_path):
    rows = [f"i/{k}.png,{k % 2},P{k},{'train' if k < 8 else 'val'}" for k in range(12)]
    path = write_manifest(tmp_path / "m", rows, header="path,label,patient_id,split")
    with pytest.raises(UserError) as exc:
        load(registry, "csv/binary/m", csv_file=str(path))
    assert "split 'test' is empty" in one_line(exc)


def test_patient_in_two_splits_fails(registry, tmp_path):
    rows = [f"i/{k}.png,{k % 2},P{k // 2},{['train', 'val', 'test'][k % 3]}" for k in range(12)]
    path = write_manifest(tmp_path / "m", rows, header="path,label,patient_id,split")
    with pytest.raises(UserError, match=r"patient/group 'P0' appears in both split 'train' and 'val'"):
        load(registry, "csv/binary/m", csv_file=str(path))


def test_generated_split_is_grouped_stratified_recorded_and_reused(tmp_path):
    rng = np.random.default_rng(0)
    groups = np.repeat([f"P{i}" for i in range(60)], 3)
    labels = np.repeat(rng.integers(0, 2, 60), 3)
    ids = [f"img{i}" for i in range(len(labels))]
    result = assign_splits("demo", ids, labels, groups, seed=3, split_dir=tmp_path)
    names = result.names
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert set(groups[names == a]).isdisjoint(groups[names == b])
    assert 0.15 < np.mean(names == "test") < 0.25 and 0.05 < np.mean(names == "val") < 0.15
    assert abs(labels[names == "test"].mean() - labels.mean()) < 0.15  # stratified
    path = Path(result.info["split_file"])
    saved = json.loads(path.read_text())
    assert saved["seed"] == 3 and sorted(saved["splits"]["test"]) == sorted(np.asarray(ids)[names == "test"])
    again = assign_splits("demo", ids, labels, groups, seed=3, split_dir=tmp_path)
    assert list(again.names) == list(names) and again.info["split_file"] == str(path)
    other = assign_splits("demo", ids, labels, groups, seed=4, split_dir=tmp_path)
    assert list(other.names) != list(names) and other.info["split_file"] != str(path)
    # a user's split file is applied as given
    saved["splits"]["train"], saved["splits"]["test"] = saved["splits"]["test"], saved["splits"]["train"]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(saved))
    swapped = assign_splits("demo", ids, labels, groups, split_file=mine)
    assert list(swapped.names[names == "test"]) == ["train"] * int(np.sum(names == "test"))
    saved["splits"]["train"].append("img-unknown")
    mine.write_text(json.dumps(saved))
    with pytest.raises(UserError, match="img-unknown"):
        assign_splits("demo", ids, labels, groups, split_file=mine)


def test_multilabel_split_and_too_small_data(tmp_path):
    labels = np.zeros((40, 3), int)
    labels[::2, 0] = 1
    labels[::5, 2] = 1
    result = assign_splits("ml", [str(i) for i in range(40)], labels, seed=0)
    assert all(labels[result.names == s][:, 2].sum() > 0 for s in ("train", "test"))
    with pytest.raises(UserError, match="cannot carve"):
        assign_splits("tiny", ["a"], np.array([0]))


def test_list_datasets_shows_metadata_without_loading(capsys, monkeypatch, tmp_path, registry_factory):
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    registry = registry_factory()

    def boom(spec, **options):
        raise AssertionError(f"listing loaded {spec.name}")

    for name, entry in list(registry.entries["dataset"].items()):  # listing must never load data
        registry.entries["dataset"][name] = Entry(dataclasses.replace(entry.spec, load=boom), entry.plugin)
    monkeypatch.setattr(cli, "_registry", lambda warn=True: registry)
    with pytest.raises(SystemExit) as info:
        cli.main(["list", "datasets", "--json"])
    assert info.value.code in (0, None)
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    for name in (
        "nih/chestx-ray14",
        "chexpert/small",
        "aptos/2019",
        "isic/2019",
        "cbis-ddsm/mass-roi",
        "tb/montgomery",
        "brain-tumor-mri",
        "sars-cov-2-ct",
        "medmnist/retinamnist_224",
    ):
        assert entries[name]["license"] and entries[name]["citation"] and entries[name]["classes"]
    assert entries["nih/chestx-ray14"]["task"] == "multilabel" and entries["aptos/2019"]["task"] == "ordinal"
    assert entries["medmnist/organcmnist"]["splits"] == {"train": 12975, "val": 2392, "test": 8216}
    assert entries["medmnist/dermamnist"]["license"] == "CC BY-NC 4.0"
    for family in ("folder/<name>", "csv/<name>", "dicom/<name>", "hf/<name>"):
        assert family in entries
    with pytest.raises(SystemExit):
        cli.main(["list", "datasets", "tb/*"])
    table = capsys.readouterr().out
    assert "tb/montgomery" in table and "normal, tuberculosis" in table and "Jaeger" in table
