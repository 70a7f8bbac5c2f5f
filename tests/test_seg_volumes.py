"""Volumes: the Decathlon, BTCV and nifti/ layouts on real files, orientation, spacing, windows,
splits by volume, and a segmentation run scored per volume in millimetres."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfm import UserError
from medfm.api import RunConfig, Runner
from medfm.datasets import canonical_header, read_volume, window_volume


@pytest.fixture
def registry(registry_factory):
    return registry_factory()


LPS = np.diag([-1.5, -1.5, 3.0, 1.0])  # 1.5 mm in-plane, 3 mm slices, stored left-posterior-superior


def blob_volume(rng: np.random.Generator, shape=(24, 24, 6)) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume (HU) with a bright ellipsoid organ and its label."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = rng.uniform(0.35, 0.65, 3) * np.asarray(shape)
    r = np.asarray(shape) * rng.uniform(0.18, 0.28)
    organ = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
    image = rng.normal(-100, 40, shape) + 250 * organ
    return image.astype(np.int16), organ.astype(np.uint8)


def write_msd(root: Path, n: int = 6, task: str = "Task09_Spleen") -> Path:
    folder = root / task
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    training = []
    for i in range(n):
        image, label = blob_volume(rng)
        nib.save(nib.Nifti1Image(image, LPS), folder / "imagesTr" / f"spleen_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, LPS), folder / "labelsTr" / f"spleen_{i}.nii.gz")
        training.append({"image": f"./imagesTr/spleen_{i}.nii.gz", "label": f"./labelsTr/spleen_{i}.nii.gz"})
    meta = {"name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
            "training": training, "test": []}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_reorientation_spacing_and_windows_on_a_real_mri(tmp_path):
    nilearn = pytest.importorskip("nilearn")
    data = Path(nilearn.__file__).parent / "datasets" / "data"
    t1 = nib.load(data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = np.asarray(nib.load(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj, dtype=np.float32)
    ras = np.asarray(t1.dataobj)
    assert nib.aff2axcodes(t1.affine) == ("R", "A", "S")
    # the same real scan stored left-posterior-superior: reading must give back the RAS array
    lps_affine = t1.affine @ np.array(
        [[-1, 0, 0, ras.shape[0] - 1], [0, -1, 0, ras.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    lps = tmp_path / "t1_lps.nii.gz"
    nib.save(nib.Nifti1Image(ras[::-1, ::-1, :].copy(), lps_affine), lps)
    assert nib.aff2axcodes(nib.load(lps).affine) == ("L", "P", "S")
    got, spacing = read_volume(lps)
    assert spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(got, ras)
    assert canonical_header(lps) == (ras.shape, (1.0, 1.0, 1.0))
    # MRI window: the 5th-95th percentile of the non-zero voxels spans 0..255
    image = window_volume(got, "mri")
    lo, hi = np.percentile(got[got != 0], [5, 95])
    assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255
    assert (image[got <= lo] == 0).all() and (image[got >= hi] == 255).all()
    # anatomy: in T1, white matter is brighter than grey matter, which is brighter than the background
    label = np.zeros(ras.shape, np.uint8)
    label[gm > 0.5] = 1
    label[wm > 0.5] = 2
    assert image[label == 2].mean() > image[label == 1].mean() > image[label == 0].mean()


def test_decathlon_layout_gives_axial_slices_split_by_volume(registry, tmp_path):
    folder = write_msd(tmp_path)
    spec = registry.get("dataset", "msd/Task09_Spleen")
    ds = spec.load(spec, root=str(folder))
    assert ds.task == "segmentation" and ds.classes == ("background", "spleen")
    seen: dict[str, str] = {}
    for name in ds.split_names:
        split = ds.split(name)
        assert split.spacing is not None and split.spacing.shape == (len(split), 3)
        np.testing.assert_allclose(split.spacing[0], [1.5, 1.5, 3.0])
        assert len(set(split.ids)) == len(split)
        for case in split.cases:
            assert seen.setdefault(case, name) == name  # no volume in two splits
        assert len(split) % 6 == 0  # every axial slice of every volume
    assert len(seen) == 6
    # image and mask slices match the file reoriented to RAS, and the CT window holds
    split = ds.split("test")
    case = split.cases[0]
    image, _ = read_volume(folder / "imagesTr" / f"{case}.nii.gz")
    label, _ = read_volume(folder / "labelsTr" / f"{case}.nii.gz")
    raw = np.asarray(nib.load(folder / "labelsTr" / f"{case}.nii.gz").dataobj)
    np.testing.assert_array_equal(label, raw[::-1, ::-1, :])  # LPS -> RAS flips the first two axes
    np.testing.assert_array_equal(split.masks[2], label[:, :, 2])
    want = np.round((np.clip(image[:, :, 2].astype(np.float32), -1024, 600) + 1024) / 1624 * 255).astype(np.uint8)
    np.testing.assert_array_equal(split.images[2], want)
    assert ds.info["segmentation"]["volumes"] is True and ds.info["disk_state"]


def test_volume_layout_mistakes_are_one_line(registry, tmp_path):
    spec = registry.get("dataset", "msd/Task09_Spleen")
    with pytest.raises(UserError, match="dataset.json is missing"):
        spec.load(spec, root=str(tmp_path))
    folder = write_msd(tmp_path)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="not a Decathlon dataset.json"):
        spec.load(spec, root=str(folder))
    folder2 = write_msd(tmp_path / "b")
    os.remove(folder2 / "labelsTr" / "spleen_3.nii.gz")
    with pytest.raises(UserError, match="spleen_3.nii.gz is missing"):
        spec.load(spec, root=str(folder2))
    folder3 = write_msd(tmp_path / "c")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 6), np.uint8), LPS), folder3 / "labelsTr" / "spleen_1.nii.gz")
    with pytest.raises(UserError, match="does not match|has shape"):
        spec.load(spec, root=str(folder3))
    with pytest.raises(Exception, match="Decathlon task name"):
        registry.get("dataset", "msd/spleen")


def test_btcv_and_nifti_layouts(registry, tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "btcv" / "RawData" / "Training"
    (base / "img").mkdir(parents=True)
    (base / "label").mkdir()
    nifti = tmp_path / "mine"
    (nifti / "images").mkdir(parents=True)
    (nifti / "labels").mkdir()
    for i in range(1, 5):
        image, label = blob_volume(rng)
        nib.save(nib.Nifti1Image(image, np.eye(4)), base / "img" / f"img{i:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label * 6, np.eye(4)), base / "label" / f"label{i:04d}.nii.gz")
        nib.save(nib.Nifti1Image(image, np.eye(4)), nifti / "images" / f"pat{i // 2}_scan{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), nifti / "labels" / f"pat{i // 2}_scan{i}.nii.gz")
    spec = registry.get("dataset", "btcv/abdomen")
    ds = spec.load(spec, root=str(tmp_path / "btcv"))
    assert len(ds.classes) == 14 and ds.classes[6] == "liver"
    assert sorted({c for s in ds.split_names for c in ds.split(s).cases}) == [f"img{i:04d}" for i in range(1, 5)]
    spec = registry.get("dataset", "nifti/mine")
    ds = spec.load(spec, root=str(nifti), classes=["background", "organ"], group_regex=r"pat\d+")
    for name in ds.split_names:
        split = ds.split(name)
        patients = {g for g in split.groups}
        assert all(str(c).split("_")[0] in patients for c in split.cases)


def test_seg_protocols_on_a_decathlon_set_score_each_volume_whole_in_mm(registry, tmp_path, one_torch_thread):
    from medfm import cli
    from medfm.api import scan_results

    folder = write_msd(tmp_path / "data")
    cfg = RunConfig(
        backbones=["random/test_resnet@64"],
        datasets=["msd/Task09_Spleen"],
        protocols=["seg_*"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "leaderboard.md"),
        bootstrap=1000,
        batch_size=16,
        device="cpu",
    )
    cfg.options["dataset"]["msd/Task09_Spleen"] = {"root": str(folder)}
    for p in ("seg_linear", "seg_unet"):
        cfg.options["protocol"][p] = {"epochs": 2, "lrs": [0.01, 0.1], "batch_size": 8}
    outcomes = Runner(registry, cfg).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    for outcome in outcomes:
        record = json.loads(outcome.record_path.read_text())
        block = record["segmentation"]
        assert block["scored"] == "volume" and block["unit"] == "mm" and block["cases"] >= 1
        assert record["test_set"]["n"] == block["cases"] * 6  # every slice of each test volume
        assert record["ci"]["unit"] == "patient"
    assert len(scan_results(tmp_path / "results").valid) == 2
    # each volume is one case: the record's Dice is the mean of MONAI's Dice of the stacked volumes
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    from medfm.api import read_segmentation_predictions

    record = json.loads(outcomes[0].record_path.read_text())
    preds = read_segmentation_predictions(outcomes[0].record_path.with_name(record["predictions"]["file"]))
    dice, hd = [], []
    for case in dict.fromkeys(preds.cases):
        rows = [k for k, c in enumerate(preds.cases) if c == case]
        p = np.stack([preds.pred[k] for k in rows], -1)
        t = np.stack([preds.truth[k] for k in rows], -1)
        onehot = [
            torch.nn.functional.one_hot(torch.from_numpy(a.astype(np.int64)), 2).movedim(-1, 0)[None] for a in (p, t)
        ]
        dice.append(float(compute_dice(*onehot, include_background=False, ignore_empty=False)))
        if p.any() and t.any():
            hd.append(float(compute_hausdorff_distance(*onehot, percentile=95, spacing=[1.5, 1.5, 3.0])))
    assert record["metrics"]["dice"]["value"] == pytest.approx(np.mean(dice), abs=1e-5)
    if hd:
        assert record["metrics"]["hd95"]["value"] == pytest.approx(np.mean(hd), abs=1e-4)
    # and through the command line, as a user runs it: both cells are current, nothing reruns
    os.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli.main(
            ["run", "-b", "random/test_resnet@64", "-d", "msd/Task09_Spleen", "-p", "seg_*",
             "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
             "--leaderboard", str(tmp_path / "leaderboard.md"), "--bootstrap", "1000", "--batch-size", "16",
             "--device", "cpu", "--set", f"dataset.msd/Task09_Spleen.root={folder}",
             "--set", "protocol.seg_linear.epochs=2", "--set", "protocol.seg_linear.lrs=[0.01, 0.1]",
             "--set", "protocol.seg_linear.batch_size=8", "--set", "protocol.seg_unet.epochs=2",
             "--set", "protocol.seg_unet.lrs=[0.01, 0.1]", "--set", "protocol.seg_unet.batch_size=8"]
        )  # fmt: skip
    assert done.value.code == 0
    assert len(scan_results(tmp_path / "results").valid) == 2
