"""Segmentation end to end: decoders, memory-mapped maps, per-case scoring, records, validation,
the leaderboard, kill-and-resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfm.api import RunConfig, Runner
from medfm.datasets import Dataset, DatasetSpec, Split, array_fingerprint, hookimpl
from medfm.protocols import LinearDecoder, UNetDecoder


def _blob_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs on noise, with their masks: learnable from a few examples."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.12, size * 0.22)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = (rng.normal(60, 15, (size, size)) + 120 * m).clip(0, 255).astype(np.uint8)
        images.append(img)
        masks.append(m)
    return np.stack(images), np.stack(masks)


class BlobSegmentation:
    """A small in-memory 2D segmentation set (one patient per two images)."""

    plugin_name = "blob_segmentation"

    @hookimpl
    def register_datasets(self, register):
        def load(spec, n: int = 48, size: int = 48):
            images, masks = _blob_images(n, size, 0)
            groups = np.asarray([f"P{i // 2:03d}" for i in range(n)])
            cut = {"train": slice(0, n // 2), "val": slice(n // 2, 3 * n // 4), "test": slice(3 * n // 4, n)}
            splits = {
                name: Split(
                    name,
                    images[s],
                    (masks[s].reshape(len(masks[s]), -1).max(1) > 0).astype(int),
                    groups=groups[s],
                    ids=[f"img{i:03d}" for i in range(n)][s],
                    masks=masks[s],
                )
                for name, s in cut.items()
            }
            return Dataset("segmentation", spec.classes, splits, array_fingerprint(images, masks))

        register(
            DatasetSpec(
                name="test/blobs",
                load=load,
                task="segmentation",
                classes=("background", "blob"),
                primary_metric="dice",
                synthetic=True,
                options={"n": 48, "size": 48},
            )
        )


def seg_config(tmp_path: Path, protocols: list[str], backbones: list[str] | None = None) -> RunConfig:
    cfg = RunConfig(
        backbones=backbones or ["random/test_vit@64"],
        datasets=["test/blobs"],
        protocols=protocols,
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "leaderboard.md"),
        bootstrap=1000,
        batch_size=16,
        device="cpu",
    )
    for p in ("seg_linear", "seg_unet"):
        cfg.options["protocol"][p] = {"epochs": 3, "lrs": [0.01, 0.1], "batch_size": 8}
    return cfg


def test_decoders_give_logits_at_the_input_size_for_vit_and_cnn_maps():
    vit = [torch.randn(2, 64, 4, 4) for _ in range(5)]
    cnn = [torch.randn(2, c, s, s) for c, s in ((16, 32), (24, 16), (32, 8), (48, 4), (64, 2))]
    for maps in (vit, cnn):
        channels = [m.shape[1] for m in maps]
        assert UNetDecoder(channels, 3)(maps, 64).shape == (2, 3, 64, 64)
        assert LinearDecoder(channels, 3)(maps, 64).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="5 maps"):
        UNetDecoder([64, 64], 2)


def test_feature_maps_of_real_architectures_shallowest_first():
    import timm
    import torchvision

    from medfm.backbones import TimmBackbone, preprocessing_from_timm
    from medfm_plugins.backbones.torchvision_models import TorchvisionBackbone

    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=56)
    maps = TimmBackbone(vit).feature_maps(torch.zeros(1, 3, 56, 56), 5)
    assert [m.shape for m in maps] == [torch.Size([1, 384, 4, 4])] * 5
    tv = torchvision.models.mobilenet_v2()
    backbone = TorchvisionBackbone("mobilenet_v2", tv.eval(), preprocessing_from_timm(vit), None, "")
    maps = backbone.feature_maps(torch.zeros(1, 3, 64, 64), 5)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 32), (24, 16, 16), (32, 8, 8), (96, 4, 4), (1280, 2, 2)]
    # the deepest map is the one the classifier pools
    assert torch.allclose(maps[-1].mean((2, 3)), backbone.features(torch.zeros(1, 3, 64, 64), ["gap"])["gap"])


def test_seg_protocols_run_record_validate_and_rank(registry_factory, tmp_path, one_torch_thread):
    from medfm.api import scan_results

    registry = registry_factory(BlobSegmentation())
    cfg = seg_config(tmp_path, ["seg_*"])
    outcomes = Runner(registry, cfg).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    for outcome in outcomes:
        record = json.loads(outcome.record_path.read_text())
        assert record["dataset"]["task"] == "segmentation"
        assert set(record["metrics"]) == {"dice", "iou", "nsd", "hd95"}
        assert record["segmentation"]["scored"] == "image"
        assert record["segmentation"]["cases"] == 12 and record["segmentation"]["unit"] == "pixel"
        dice = record["metrics"]["dice"]
        assert dice["ci_low"] <= dice["value"] <= dice["ci_high"]
        assert record["selected"]["lr"] in (0.01, 0.1)
        assert record["ci"]["unit"] == "patient"
    scan = scan_results(tmp_path / "results")
    assert len(scan.valid) == 2 and not scan.rejected
    board = (tmp_path / "leaderboard.md").read_text()
    assert "seg_unet" in board and "seg_linear" in board and "· NSD" in board and "· HD95" in board


def test_maps_are_memory_mapped_float16_and_extracted_once_for_both_decoders(
    registry_factory, tmp_path, one_torch_thread
):
    registry = registry_factory(BlobSegmentation())
    cfg = seg_config(tmp_path, ["seg_linear", "seg_unet"])
    runner = Runner(registry, cfg)
    calls = []
    runner.events.extraction = lambda label, n: (calls.append(label), lambda k: None)[1]  # type: ignore[method-assign]
    outcomes = runner.run()
    assert [o.status for o in outcomes] == ["ok", "ok"]
    # one pass per split, for the 5 levels the UNet reads; the linear decoder reuses the last
    assert sorted(calls) == sorted(f"random/test_vit@64 maps on test/blobs/{s}" for s in ("train", "val", "test"))
    maps = list((tmp_path / "cache" / "maps").glob("*/*.npy"))
    arrays = [np.load(p, mmap_mode="r") for p in maps]
    assert all(isinstance(a, np.memmap) for a in arrays)
    assert sum(a.dtype == np.float16 for a in arrays) == 15  # 5 levels x 3 splits
    assert sum(a.dtype == np.uint8 for a in arrays) == 1  # the train masks at the input size


def test_metrics_equal_monai_on_the_stored_masks(registry_factory, tmp_path, one_torch_thread):
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    from medfm.api import read_segmentation_predictions

    registry = registry_factory(BlobSegmentation())
    outcome = Runner(registry, seg_config(tmp_path, ["seg_linear"])).run()[0]
    record = json.loads(outcome.record_path.read_text())
    preds = read_segmentation_predictions(outcome.record_path.with_name(record["predictions"]["file"]))
    onehot = lambda a: torch.nn.functional.one_hot(torch.from_numpy(a.astype(np.int64)), 2).movedim(-1, 0)[None]  # noqa: E731
    dice, nsd, hd = [], [], []
    for p, t in zip(preds.pred, preds.truth):
        dice.append(float(compute_dice(onehot(p), onehot(t), include_background=False, ignore_empty=False)))
        if t.any() or p.any():  # MONAI: NaN when both are empty, 0 when one is
            nsd.append(float(compute_surface_dice(onehot(p), onehot(t), [2.0], include_background=False)))
        if t.any() and p.any():
            hd.append(float(compute_hausdorff_distance(onehot(p), onehot(t), percentile=95)))
    assert record["metrics"]["dice"]["value"] == pytest.approx(np.mean(dice), abs=1e-5)
    if nsd:
        assert record["metrics"]["nsd"]["value"] == pytest.approx(np.mean(nsd), abs=1e-5)
        assert record["metrics"]["hd95"]["value"] == pytest.approx(np.mean(hd), abs=1e-4)


def test_validate_rejects_a_forged_dice_and_forged_masks(registry_factory, tmp_path, one_torch_thread):
    import io

    from medfm.api import scan_results
    from medfm.io import sha256_bytes
    from medfm.verification import verify_file

    registry = registry_factory(BlobSegmentation())
    outcome = Runner(registry, seg_config(tmp_path, ["seg_linear"])).run()[0]
    path = outcome.record_path
    original = path.read_text()
    record = json.loads(original)
    record["metrics"]["dice"]["value"] = min(1.0, record["metrics"]["dice"]["value"] + 0.1)
    path.write_text(json.dumps(record))
    checked = verify_file(path, tmp_path / "results", use_cache=False)
    assert not checked.valid and "dice is" in checked.problem and "recomputed" in checked.problem
    # masks replaced by the truth (a perfect score), the hash updated to match
    path.write_text(original)
    npz = path.with_name(json.loads(original)["predictions"]["file"])
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["pred"] = arrays["truth"].copy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    npz.write_bytes(buffer.getvalue())
    record = json.loads(original)
    record["predictions"]["sha256"] = sha256_bytes(buffer.getvalue())
    path.write_text(json.dumps(record))
    checked = verify_file(path, tmp_path / "results", use_cache=False)
    assert not checked.valid and "recomputed" in checked.problem
    # the truth changed too: the test set is no longer the one the record states
    arrays["truth"] = np.zeros_like(arrays["truth"])
    arrays["pred"] = arrays["truth"].copy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    npz.write_bytes(buffer.getvalue())
    record["predictions"]["sha256"] = sha256_bytes(buffer.getvalue())
    path.write_text(json.dumps(record))
    checked = verify_file(path, tmp_path / "results", use_cache=False)
    assert not checked.valid and "identity" in checked.problem
    assert not scan_results(tmp_path / "results").valid


def test_a_killed_segmentation_cell_resumes_to_the_same_dice(registry_factory, tmp_path, one_torch_thread, monkeypatch):
    import medfm.training.checkpoint as checkpoint

    registry = registry_factory(BlobSegmentation())
    straight = Runner(registry, seg_config(tmp_path / "a", ["seg_unet"])).run()[0]
    want = json.loads(straight.record_path.read_text())["metrics"]

    saves = []
    real_save = checkpoint.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        saves.append(payload["epoch"])
        if payload["epoch"] == 2:
            raise KeyboardInterrupt  # the process is killed after its second epoch

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    cfg = seg_config(tmp_path / "b", ["seg_unet"])
    with pytest.raises(KeyboardInterrupt):
        Runner(registry, cfg).run()
    assert saves == [1, 2]
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    logs: list[str] = []
    runner = Runner(registry, cfg)
    runner.events.log = logs.append  # type: ignore[method-assign]
    resumed = runner.run()[0]
    assert resumed.status == "ok"
    assert any("resuming the segmentation decoders at epoch 3" in line for line in logs)
    got = json.loads(resumed.record_path.read_text())["metrics"]
    assert got == want
    assert not list((tmp_path / "b" / "results").rglob("segmentation_heads.pt"))  # removed once recorded


def test_the_plan_pairs_protocols_with_the_tasks_they_support(registry_factory, tmp_path):
    from medfm import UserError

    registry = registry_factory(BlobSegmentation())
    cfg = seg_config(tmp_path, ["knn", "seg_linear"])
    cfg.datasets = ["test/blobs", "synthetic/cxr-nodules"]
    cells = Runner(registry, cfg).plan()
    assert sorted((c.dataset.name, c.protocol.name) for c in cells) == [
        ("synthetic/cxr-nodules", "knn"),
        ("test/blobs", "seg_linear"),
    ]
    with pytest.raises(UserError, match="'knn' does not support segmentation"):
        Runner(registry, seg_config(tmp_path, ["knn"])).plan()


def test_a_backbone_without_feature_maps_fails_its_cells_with_one_line(registry_factory, tmp_path):
    registry = registry_factory(BlobSegmentation())
    cfg = seg_config(tmp_path, ["seg_unet"], backbones=["random/test_convnext@64"])
    outcome = Runner(registry, cfg).run()[0]
    assert outcome.status == "error" and "cannot give 5 feature maps" in outcome.message


def test_the_web_page_shows_nsd_and_hd95_beside_dice(registry_factory, tmp_path, one_torch_thread, browser):
    from medfm import cli

    registry = registry_factory(BlobSegmentation())
    cfg = seg_config(tmp_path, ["seg_linear"], backbones=["random/test_vit@64", "random/test_resnet@64"])
    cfg.options["protocol"]["seg_linear"] = {"epochs": 6, "lrs": [0.1, 0.3], "batch_size": 8}
    outcomes = Runner(registry, cfg).run()
    assert all(o.status == "ok" for o in outcomes)
    site = tmp_path / "site"
    with pytest.raises(SystemExit) as done:
        cli.main(["leaderboard", "--results", str(tmp_path / "results"), "--file", str(tmp_path / "lb.md"),
                  "--html", str(site)])  # fmt: skip
    assert done.value.code == 0
    ranked = [json.loads(o.record_path.read_text()) for o in outcomes if not o.flags]
    assert ranked, [o.flags for o in outcomes]
    page = browser.new_page()
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("table.board")
    shown = page.eval_on_selector_all("span.alongside", "els => els.map(e => [e.dataset.metric, e.textContent])")
    nsd = sorted(float(text.split()[-1]) for metric, text in shown if metric == "nsd")
    hd95 = sorted(float(text.split()[-1]) for metric, text in shown if metric == "hd95")
    assert nsd == pytest.approx(sorted(r["metrics"]["nsd"]["value"] for r in ranked), abs=5e-3)
    assert hd95 == pytest.approx(sorted(r["metrics"]["hd95"]["value"] for r in ranked), rel=5e-3)
    page.close()
