"""2D segmentation sets: the synthetic nodules, and Montgomery and Shenzhen lungs in their layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfm import UserError


@pytest.fixture
def registry(registry_factory):
    return registry_factory()


def test_synthetic_nodule_segmentation_is_deterministic_and_grouped(registry):
    spec = registry.get("dataset", "synthetic/cxr-nodules-seg")
    a, b = spec.load(spec, patients=40, size=64), spec.load(spec, patients=40, size=64)
    assert a.fingerprint == b.fingerprint and a.task == "segmentation"
    assert a.classes == ("background", "nodule")
    patients = {}
    for name in a.split_names:
        split = a.split(name)
        assert split.masks is not None and split.spacing is None and split.cases is None
        for i in range(len(split)):
            assert split.masks[i].shape == split.images[i].shape and split.masks[i].any()  # every image has a nodule
        for g in split.groups:
            assert patients.setdefault(g, name) == name
        np.testing.assert_array_equal(a.split(name).masks, b.split(name).masks)
    assert sum(len(a.split(n)) for n in a.split_names) == 40  # 20 patients with a nodule, 2 images each


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_montgomery_and_shenzhen_lungs_merge_left_and_right(registry, tmp_path):
    rng = np.random.default_rng(0)
    mont, china = tmp_path / "MontgomerySet", tmp_path / "ChinaSet_AllFiles"
    for i in range(10):
        name = f"MCUCXR_{i:04d}_{i % 2}.png"
        _png(mont / "CXR_png" / name, rng.integers(0, 255, (40, 32), dtype=np.uint8))
        left, right = np.zeros((40, 32), np.uint8), np.zeros((40, 32), np.uint8)
        left[5:30, 3:12], right[5:30, 18:28] = 255, 255
        _png(mont / "ManualMask" / "leftMask" / name, left)
        _png(mont / "ManualMask" / "rightMask" / name, right)
        stem = f"CHNCXR_{i:04d}_{i % 2}"
        _png(china / "CXR_png" / f"{stem}.png", rng.integers(0, 255, (36, 36), dtype=np.uint8))
        if i != 3:  # the mask release covers most, not all, images
            _png(china / "mask" / f"{stem}_mask.png", np.pad(np.full((20, 20), 255, np.uint8), 8))
    spec = registry.get("dataset", "tb/montgomery-lungs")
    ds = spec.load(spec, root=str(mont))
    assert ds.task == "segmentation" and ds.classes == ("background", "lung")
    split = ds.split("train")
    mask = split.masks[0]
    assert mask.shape == (40, 32) and set(np.unique(mask)) == {0, 1}
    assert mask[10, 5] == 1 and mask[10, 20] == 1 and mask[10, 15] == 0
    spec = registry.get("dataset", "tb/shenzhen-lungs")
    ds = spec.load(spec, root=str(china))
    ids = [i for n in ds.split_names for i in ds.split(n).ids]
    assert len(ids) == 9 and not any("CHNCXR_0003" in i for i in ids)
    with pytest.raises(UserError, match="mask folder"):
        spec.load(spec, root=str(china), mask_dir=str(tmp_path / "nowhere"))


def test_medfm_run_seg_protocols_on_the_synthetic_set(tmp_path, monkeypatch, capsys, one_torch_thread):
    import json

    from medfm import cli
    from medfm.api import scan_results

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    argv = [
        "run",
        "-b",
        "random/test_vit@64",
        "-d",
        "synthetic/cxr-nodules-seg",
        "-p",
        "seg_*",
        "--device",
        "cpu",
        "--set",
        "dataset.synthetic/cxr-nodules-seg.patients=20",
        "--set",
        "dataset.synthetic/cxr-nodules-seg.size=64",
    ]
    for p in ("seg_linear", "seg_unet"):
        argv += ["--set", f"protocol.{p}.epochs=1", "--set", f"protocol.{p}.lrs=[0.01, 0.1]"]
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 0, capsys.readouterr().err
    scan = scan_results(tmp_path / "results")
    assert len(scan.valid) == 2 and not scan.rejected
    for checked in scan.valid:
        assert checked.record["segmentation"]["scored"] == "image"
        assert set(checked.record["metrics"]) == {"dice", "iou", "nsd", "hd95"}
    board = (tmp_path / "leaderboard.md").read_text()
    assert "seg_linear" in board and "seg_unet" in board
    assert json.loads(json.dumps(scan.valid[0].record))["dataset"]["task"] == "segmentation"
