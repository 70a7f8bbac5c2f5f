"""First-party named backbones: real architectures, randomly initialised, never downloading.

Every named spec is built with ``pretrained = false`` (the real timm / OpenCLIP /
transformers / torchvision architecture, random weights) on a small input and must return
every feature kind it declares, at the declared dimension. ViT-L and ViT-g are built on the
meta device (shapes only, no memory, no arithmetic). Parameter counts are checked against
the built modules and, for the studies' models, against the published numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_registry
from torch import nn

from medfm import UserError
from medfm.specs import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = build_registry()
# name -> (published parameter count, the study reporting it)
PUBLISHED = {
    "sam_vitb": 88.8e6,
    "seem_focalt": 29.9e6,
    "dinov2_vitb14": 86.5e6,
    "openclip_vitb16_laion2b": 86.2e6,
    "blip_base": 85.7e6,
}
FIRST_PARTY_PLUGINS = ("dino", "supervised", "sam", "seem", "open_clip_models", "blip")
NAMED = sorted(n for n in REGISTRY.names("backbone") if REGISTRY.provenance("backbone", n).name in FIRST_PARTY_PLUGINS)
# too big to initialise for real on a shared 2-core CPU: shapes are checked on the meta device
ON_META = {n for n in NAMED if REGISTRY.get("backbone", n).params > 250_000_000}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """A test that tried to download would fail at once instead of retrying for a minute."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _small_size(name: str) -> int:
    """A small input that every patch size and stride of the model divides."""
    return 56 if "14" in name else 64


def _suffix_hits(module: nn.Module, suffix: str) -> list[nn.Module]:
    return [m for n, m in module.named_modules() if n == suffix or n.endswith("." + suffix)]


def test_the_studies_models_are_all_registered():
    expected = {f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")} | {
        "dino_vits16",
        "dino_vitb16",
        "openclip_vitb16_laion2b",
        "openclip_vitl14_laion2b",
        "blip_base",
        "sam_vitb",
        "seem_focalt",
        "deit_base",
        "resnet152",
        "resnet50",
        "densenet121",
        "vgg16",
        "vitb16_in21k",
    }
    assert set(NAMED) == expected
    assert {f.spec.prefix for f in REGISTRY.families["backbone"]} >= {"timm/", "open_clip/", "hf/"}


@pytest.mark.parametrize("name", NAMED)
def test_backbone_returns_every_declared_kind_at_its_dimension(name):
    base = REGISTRY.get("backbone", name)
    size = _small_size(name)
    spec = base.at_resolution(size)
    torch.manual_seed(0)
    if name in ON_META:
        with torch.device("meta"):
            backbone = spec.load(spec, pretrained=False)
            images = torch.empty(2, 3, size, size)
    else:
        backbone = spec.load(spec, pretrained=False)
        images = backbone.preprocessing.normalize(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    assert backbone.weights_sha256 is None and "random" in backbone.weights_source
    assert backbone.preprocessing.size == size  # the resolution axis reaches the model
    assert set(backbone.feature_dims) == set(base.feature_kinds)
    assert backbone.feature_dims[backbone.default_kind] == base.embed_dim
    with torch.inference_mode():
        out = backbone.features(images, list(backbone.feature_dims))
    assert set(out) == set(backbone.feature_dims)
    for kind, tensor in out.items():
        assert tensor.shape[:2] == (2, backbone.feature_dims[kind]), kind
        if kind in ("patch_map", "spatial_map"):
            assert tensor.ndim == 4 and tensor.shape[2] == tensor.shape[3] >= 1, kind
        else:
            assert tensor.ndim == 2, kind
        if tensor.device.type != "meta":
            assert torch.isfinite(tensor).all(), kind
    # what the training protocols use: ordered blocks, attention projections for LoRA
    blocks = backbone.blocks()
    assert len(blocks) >= 4 and all(isinstance(b, nn.Module) for b in blocks)
    for suffix in backbone.attention_projections:
        hits = _suffix_hits(backbone.module, suffix)
        assert len(hits) == len(blocks), (suffix, len(hits), len(blocks))
        assert all(isinstance(m, (nn.Linear, nn.MultiheadAttention)) for m in hits), suffix


@pytest.mark.parametrize("name", NAMED)
def test_declared_parameter_count_is_the_built_module(name):
    spec = REGISTRY.get("backbone", name)
    with torch.device("meta"):  # exact counts without allocating a single weight
        backbone = spec.load(spec, pretrained=False)
    assert backbone.num_parameters == spec.params


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_ones_within_5_percent(name):
    spec = REGISTRY.get("backbone", name)
    assert abs(spec.params / PUBLISHED[name] - 1) < 0.05, (spec.params, PUBLISHED[name])


def test_parameter_gaps_are_explained():
    """The alternative counts the module docstrings give for each gap really are the published ones."""
    import timm
    from transformers import BlipVisionConfig, BlipVisionModel

    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    with torch.device("meta"):
        dinov2_518 = count(timm.create_model("vit_base_patch14_dinov2", num_classes=0))
        sam = timm.create_model("samvit_base_patch16", num_classes=0)
        sam_trunk = count(sam) - count(sam.neck)
        blip_224 = count(BlipVisionModel(BlipVisionConfig(image_size=224)))
    for ours, published in ((dinov2_518, 86.5e6), (sam_trunk, 88.8e6), (blip_224, 85.7e6)):
        assert abs(ours / published - 1) < 0.002, (ours, published)


def test_metadata_is_complete_and_from_the_models_own_configs():
    import timm
    from torchvision import models as tvm

    for name in NAMED:
        spec = REGISTRY.get("backbone", name)
        assert spec.objective in OBJECTIVES and spec.objective != "none", name
        assert spec.pretraining and spec.license and spec.citation and spec.feature_kinds, name
        assert spec.params and spec.embed_dim and spec.revision, name
        timm_name = spec.revision.split(":", 1)[1] if spec.revision.startswith("timm:") else None
        if timm_name:
            cfg = timm.models.get_pretrained_cfg(timm_name).to_dict()
            assert (spec.mean, spec.std) == (tuple(cfg["mean"]), tuple(cfg["std"])), name
            # SAM's own ResizeLongestSide resizes bilinearly; timm's config says bicubic
            assert spec.interpolation == ("bilinear" if name == "sam_vitb" else cfg["interpolation"]), name
    for name in ("resnet50", "resnet152", "densenet121", "vgg16"):
        spec = REGISTRY.get("backbone", name)
        transforms = tvm.get_model_weights(name).IMAGENET1K_V1.transforms()
        assert (spec.mean, spec.std, spec.input_size) == (tuple(transforms.mean), tuple(transforms.std), 224)
        assert spec.interpolation == "bilinear"
    assert REGISTRY.get("backbone", "dinov2_vitb14").input_size == 224  # DINOv2's evaluation resolution
    assert REGISTRY.get("backbone", "sam_vitb").input_size == 1024


def test_open_clip_metadata_written_out_equals_open_clip_configs():
    """Listing never imports OpenCLIP, so the named specs carry copies; they must stay true."""
    import open_clip

    from medfm_plugins.backbones.open_clip_models import NAMED as OPENCLIP

    for name, (arch, tag, *_rest) in OPENCLIP.items():
        spec = REGISTRY.get("backbone", name)
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        assert (spec.mean, spec.std, spec.interpolation) == (
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            cfg["interpolation"],
        )
        assert spec.input_size == open_clip.get_model_config(arch)["vision_cfg"]["image_size"]


def test_blip_config_is_blip_base():
    from transformers import BlipVisionConfig

    cfg = BlipVisionConfig()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.image_size) == (768, 12, 16, 384)
    assert REGISTRY.get("backbone", "blip_base").input_size == cfg.image_size


def test_listing_imports_no_model_library_and_needs_no_network(tmp_path):
    """`medfm list backbones` registers every spec without OpenCLIP, transformers or a download."""
    code = (
        "import sys, json; from medfm.cli import main\n"
        "try:\n    main(['list', 'backbones', '--json'])\nexcept SystemExit as e:\n    assert not e.code\n"
        "print('LOADED', 'open_clip' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDFM_CACHE_DIR": str(tmp_path)}
    env.pop("MEDFM_BLOCK_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED False False" in done.stderr
    import json

    listed = {e["name"]: e for e in json.loads(done.stdout)}
    assert set(NAMED) <= set(listed)
    assert listed["seem_focalt"]["params"] == 29_920_944
    assert {"hf/<name>", "open_clip/<name>", "timm/<name>"} <= set(listed)


def test_options_are_checked():
    spec = REGISTRY.get("backbone", "dinov2_vits14")
    with pytest.raises(UserError, match="unknown options"):
        spec.load(spec, weight="x")
    with pytest.raises(UserError, match="true or false"):
        spec.load(spec, pretrained="no")
    with pytest.raises(UserError, match="contradict"):
        spec.load(spec, pretrained=False, weights="/some/file.safetensors")


def test_lora_wraps_the_declared_attention_projections():
    """The training protocols hand `attention_projections` to peft: they must be adaptable."""
    peft = pytest.importorskip("peft")
    for name in ("dinov2_vits14", "openclip_vitb16_laion2b", "blip_base", "sam_vitb"):
        spec = REGISTRY.get("backbone", name).at_resolution(_small_size(name))
        backbone = spec.load(spec, pretrained=False)
        images = torch.randn(1, 3, spec.input_size, spec.input_size)
        with torch.no_grad():
            before = backbone.features(images, [backbone.default_kind])[backbone.default_kind]
        wrapped = peft.get_peft_model(
            backbone.module, peft.LoraConfig(r=2, target_modules=list(backbone.attention_projections))
        )
        for suffix in backbone.attention_projections:
            hits = _suffix_hits(backbone.module, suffix)
            assert len(hits) == len(backbone.blocks()), (name, suffix)
            assert all(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in hits), (name, suffix)
        assert wrapped.get_nb_trainable_parameters()[0] > 0
        with torch.no_grad():  # LoRA starts at zero: the features are unchanged
            after = backbone.features(images, [backbone.default_kind])[backbone.default_kind]
        torch.testing.assert_close(before, after)
