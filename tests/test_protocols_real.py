"""Every frozen-feature protocol on the real BreastMNIST with real DINOv2-S and MobileNetV2 weights.

Slow (feature extraction of 780 images by two real networks on a CPU, a few minutes); needs
``../shared/assets``. ``benchmarks/breastmnist_protocols.py`` writes the same figures into
``benchmarks/RESULTS.md`` next to the MedMNIST+ reference numbers.
"""

from __future__ import annotations

import pytest

from medfm.config import RunConfig
from medfm.records import load_record
from medfm.runner import Runner

PROTOCOLS = ["knn", "linear_probe", "logistic_regression", "few_shot_prototype", "few_shot_knn", "few_shot_linear"]
BINARY_METRICS = {"auroc", "accuracy", "balanced_accuracy", "f1_macro", "auprc", "kappa"}
DINO, MOBILENET = "timm/vit_small_patch14_dinov2@112", "torchvision/mobilenet_v2"


@pytest.mark.slow
def test_every_protocol_reports_every_metric_with_intervals_on_real_breastmnist(
    shared_assets, tmp_path, registry_factory
):
    weights = shared_assets / "weights"
    cfg = RunConfig(
        backbones=[DINO, MOBILENET],
        datasets=["medmnist/breastmnist"],
        protocols=PROTOCOLS,
        device="cpu",
        results_dir=str(tmp_path / "r"),
        cache_dir=str(tmp_path / "c"),
        leaderboard=str(tmp_path / "lb.md"),
        bootstrap=1000,
        batch_size=64,
    )
    cfg.options["backbone"] = {
        "timm/vit_small_patch14_dinov2*": {"weights": str(weights / "dinov2_vits14.safetensors")},
        "torchvision/mobilenet_v2*": {"weights": str(weights / "mobilenet_v2_tv_in1k.safetensors")},
    }
    cfg.options["dataset"] = {"medmnist/*": {"root": str(shared_assets / "medmnist")}}
    outcomes = Runner(registry_factory(), cfg).run()
    assert [o.status for o in outcomes] == ["ok"] * 12, [o.message for o in outcomes]
    records = {(o.cell.backbone.name, o.cell.protocol.name): load_record(o.record_path, verify=True) for o in outcomes}
    for (backbone, protocol), r in records.items():
        assert r["backbone"]["weights_sha256"] and r["ci"]["resamples"] == 1000
        assert set(r["metrics"]) == BINARY_METRICS
        for name, m in r["metrics"].items():
            assert m["ci_low"] <= m["value"] <= m["ci_high"], (backbone, protocol, name, m)
            assert m["ci_high"] - m["ci_low"] > 0
        # real pretrained features carry the signal: clearly above chance, unflagged
        floor = 0.65 if protocol.startswith("few_shot") else 0.8
        assert r["metrics"]["auroc"]["value"] > floor, (backbone, protocol, r["metrics"]["auroc"])
        assert r["flags"] == [], (backbone, protocol, r["flags"])
    dino_lp, mobile_lp = records[(DINO, "linear_probe")], records[(MOBILENET, "linear_probe")]
    assert dino_lp["extra"]["feature_kinds"] == ["cls", "cls_mean_patch", "last4_cls"]
    assert dino_lp["extra"]["heads"] == 72 and dino_lp["extra"]["skipped_kinds"] == []
    assert mobile_lp["extra"]["feature_kinds"] == ["gap"]
    assert mobile_lp["extra"]["skipped_kinds"] == ["cls_mean_patch", "last4_cls"]
    for backbone in (DINO, MOBILENET):
        curve = records[(backbone, "few_shot_prototype")]["extra"]["curve"]
        assert curve["shots"] == [1, 2, 4, 8, 16]
        assert all(len(v) == 5 for v in curve["per_episode"]["auroc"])
        assert curve["mean"]["auroc"][-1] > curve["mean"]["auroc"][0]
