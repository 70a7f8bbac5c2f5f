"""Backbone weights: local files and folders for every family, SEEM's checkpoint layout, offline errors.

Each family saves a randomly initialised model in its own checkpoint layout, loads it back
through the plugin, and must give the same features as the library's own forward pass of
that model. Nothing here downloads: the hub is forced offline with an empty cache.
"""

from __future__ import annotations

import copy
import json
import urllib.error
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import build_registry
from safetensors.torch import load_file, save_file
from torch import nn

from medfm import UserError
from medfm.io import sha256_file
from medfm.records import load_record
from medfm.runner import Runner

REGISTRY = build_registry()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network and an empty hub cache: a download attempt fails at once, and nothing cached
    on this machine can stand in for weights that a test expects to be missing."""
    import huggingface_hub.constants
    import torchvision.models._api

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))

    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline (test): {url}")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)


def _load(name: str, **options):
    spec = REGISTRY.get("backbone", name)
    return spec.load(spec, **options)


def _all(backbone, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return backbone.features(images, list(backbone.feature_dims))


# ---------------------------------------------------------------------- timm
@pytest.fixture(scope="module")
def dinov2_s_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random DINOv2-S in timm key names at its native 518 px, like the real checkpoint."""
    torch.manual_seed(1)
    state = timm.create_model("vit_small_patch14_dinov2.lvd142m", num_classes=0).state_dict()
    folder = tmp_path_factory.mktemp("dinov2")
    save_file(state, str(folder / "model.safetensors"))
    return folder / "model.safetensors", state


def _dynamic_dinov2(state: dict[str, torch.Tensor]) -> nn.Module:
    """timm's own DINOv2-S that resamples its position embeddings at every forward pass."""
    model = timm.create_model("vit_small_patch14_dinov2.lvd142m", num_classes=0, dynamic_img_size=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("as_folder", [False, True])
def test_named_timm_backbone_loads_a_local_file_or_folder(dinov2_s_checkpoint, as_folder):
    path, state = dinov2_s_checkpoint
    backbone = _load("dinov2_vits14@56", weights=str(path.parent if as_folder else path))
    assert backbone.weights_sha256 == sha256_file(path) and str(path) in backbone.weights_source
    x = torch.randn(2, 3, 56, 56)
    ours = _all(backbone, x)
    with torch.no_grad():
        tokens = _dynamic_dinov2(state).forward_features(x)
    torch.testing.assert_close(ours["cls"], tokens[:, 0])
    torch.testing.assert_close(ours["mean_patch"], tokens[:, 1:].mean(1))
    torch.testing.assert_close(ours["cls_mean_patch"], torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1))
    torch.testing.assert_close(ours["patch_map"], tokens[:, 1:].transpose(1, 2).reshape(2, 384, 4, 4))
    torch.testing.assert_close(ours["last4_cls"][:, -384:], tokens[:, 0])  # the last of the four is the final CLS


def test_dinov2_real_weights_through_the_named_spec(shared_assets):
    """The shared DINOv2-S file (timm names, 518 px) through `dinov2_vits14` at its 224 px default."""
    path = shared_assets / "weights" / "dinov2_vits14.safetensors"
    backbone = _load("dinov2_vits14", weights=str(path))
    assert backbone.preprocessing.size == 224
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = _dynamic_dinov2(load_file(str(path))).forward_features(x)
    torch.testing.assert_close(_all(backbone, x)["cls"], theirs[:, 0])


def test_sam_loads_timm_and_original_checkpoints_and_matches_timm_at_any_size(tmp_path):
    torch.manual_seed(2)
    native = timm.create_model("samvit_base_patch16.sa1b", num_classes=0).eval()  # 1024 px
    state = native.state_dict()
    save_file(state, str(tmp_path / "sam_timm.safetensors"))
    # Segment Anything's own file: image_encoder.* keys, mlp.lin1/lin2, plus the decoders
    original = {f"image_encoder.{k.replace('mlp.fc', 'mlp.lin')}": v for k, v in state.items()}
    original["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    torch.save(original, tmp_path / "sam_vit_b_01ec64.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # timm resamples position embeddings and relative tables on the fly
        neck, (trunk,) = native.forward_intermediates(x, indices=1)
    for name in ("sam_timm.safetensors", "sam_vit_b_01ec64.pth"):
        backbone = _load("sam_vitb@64", weights=str(tmp_path / name))
        assert backbone.module.pos_embed.shape == (1, 4, 4, 768)  # resampled once, at load
        ours = _all(backbone, x)
        torch.testing.assert_close(ours["patch_map"], trunk)
        torch.testing.assert_close(ours["spatial_map"], neck)
        torch.testing.assert_close(ours["gap"], neck.mean((2, 3)))


# ---------------------------------------------------------------------- OpenCLIP
def test_open_clip_family_loads_a_local_checkpoint(tmp_path):
    import open_clip

    torch.manual_seed(3)
    model = open_clip.create_model("ViT-S-16").eval()
    save_file(model.state_dict(), str(tmp_path / "open_clip_model.safetensors"))
    backbone = _load("open_clip/ViT-S-16", weights=str(tmp_path))
    assert backbone.weights_sha256 == sha256_file(tmp_path / "open_clip_model.safetensors")
    x = torch.randn(2, 3, 224, 224)
    ours = _all(backbone, x)
    visual = model.visual
    visual.output_tokens = True
    with torch.no_grad():
        pooled, patches = visual(x)  # OpenCLIP: (projected class token, ln_post patch tokens)
    torch.testing.assert_close(ours["pooled"], pooled)
    torch.testing.assert_close(ours["cls"] @ visual.proj, pooled)
    torch.testing.assert_close(ours["mean_patch"], patches.mean(1))
    assert ours["patch_map"].shape == (2, 384, 14, 14)


def test_open_clip_names_are_checked():
    from medfm.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="no pretrained tag 'laion9b'"):
        REGISTRY.get("backbone", "open_clip/ViT-B-16:laion9b")
    with pytest.raises(UnknownNameError, match="no architecture"):
        REGISTRY.get("backbone", "open_clip/ViT-Q-99:openai")
    with pytest.raises(UserError, match="names no pretrained tag"):
        _load("open_clip/ViT-S-16")
    assert REGISTRY.get("backbone", "open_clip/ViT-L-14:laion2b_s32b_b82k").mean == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------- transformers
def _save_hf(model: nn.Module, folder: Path, preprocessor: dict | None = None) -> Path:
    model.save_pretrained(str(folder))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def test_hf_family_loads_a_snapshot_folder_with_its_preprocessing(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(4)
    model = Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=56,
            patch_size=14,
        )
    ).eval()
    folder = _save_hf(
        model,
        tmp_path / "dinov2",
        {
            "image_mean": [0.4, 0.5, 0.6],
            "image_std": [0.2, 0.25, 0.3],
            "resample": 2,
            "do_center_crop": True,
            "crop_size": {"height": 56, "width": 56},
            "size": {"shortest_edge": 64},
        },
    )
    backbone = _load("hf/facebook/dinov2-small", weights=str(folder))
    prep = backbone.preprocessing
    assert (prep.size, prep.mean, prep.std, prep.interpolation) == (56, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bilinear")
    assert backbone.weights_sha256 == sha256_file(folder / "model.safetensors")
    x = torch.randn(2, 3, 56, 56)
    ours = _all(backbone, x)
    with torch.no_grad():
        out = model(pixel_values=x)
    torch.testing.assert_close(ours["cls"], out.last_hidden_state[:, 0])
    torch.testing.assert_close(ours["mean_patch"], out.last_hidden_state[:, 1:].mean(1))
    torch.testing.assert_close(ours["pooled"], out.pooler_output)
    torch.testing.assert_close(ours["last4_cls"][:, -32:], ours["cls"])
    assert ours["patch_map"].shape == (2, 32, 4, 4)
    assert backbone.attention_projections and len(backbone.blocks()) == 4
    for suffix in backbone.attention_projections:  # each names one Linear per block, none in the MLPs
        hits = [n for n, _ in backbone.module.named_modules() if n == suffix or n.endswith("." + suffix)]
        assert len(hits) == 4 and all(".attention." in f".{n}" for n in hits), (suffix, hits)
    # @size overrides the preprocessor's size
    assert _load("hf/facebook/dinov2-small@112", weights=str(folder)).preprocessing.size == 112


def test_hf_family_keeps_the_image_tower_and_normalises_clip_tokens(tmp_path):
    """A whole CLIP repository: the image tower only; `cls` is the final-normed class token (as
    OpenCLIP's), which transformers leaves unnormalised in last_hidden_state."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(5)
    small = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
    model = CLIPModel(
        CLIPConfig(text_config={**small, "vocab_size": 99}, vision_config={**small, "image_size": 56, "patch_size": 14})
    ).eval()
    folder = _save_hf(model, tmp_path / "clip")
    backbone = _load("hf/openai/clip-vit-base-patch16@56", weights=str(folder))
    assert backbone.layout["mode"] == "prenorm" and backbone.layout["prefix"] == 1
    x = torch.randn(2, 3, 56, 56)
    ours = _all(backbone, x)
    with torch.no_grad():
        out = model.vision_model(pixel_values=x)
    torch.testing.assert_close(ours["cls"], out.pooler_output)  # post_layernorm(class token)
    torch.testing.assert_close(ours["last4_cls"][:, -32:], ours["cls"])
    assert "text_model" not in dict(backbone.module.named_children())


def test_hf_family_handles_cnns(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(6)
    model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).eval()
    backbone = _load("hf/microsoft/resnet-50@64", weights=str(_save_hf(model, tmp_path / "resnet")))
    assert backbone.default_kind == "gap" and set(backbone.feature_dims) == {"gap", "spatial_map", "pooled"}
    assert [type(b).__name__ for b in backbone.blocks()] == ["ResNetStage", "ResNetStage"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(pixel_values=x)
    ours = _all(backbone, x)
    torch.testing.assert_close(ours["gap"], out.last_hidden_state.mean((2, 3)))
    torch.testing.assert_close(ours["pooled"], out.pooler_output.flatten(1))


def test_hf_names_and_folders_are_checked(tmp_path):
    from medfm.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        REGISTRY.get("backbone", "hf/not a repo")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        _load("hf/facebook/dinov2-small", weights=str(tmp_path))


def test_blip_loads_the_vision_tower_of_a_whole_blip_checkpoint(tmp_path):
    from transformers import BlipVisionConfig, BlipVisionModel

    torch.manual_seed(7)
    tower = BlipVisionModel(BlipVisionConfig()).eval()
    state = {f"vision_model.{k}": v for k, v in tower.state_dict().items()}
    state["text_decoder.cls.predictions.bias"] = torch.zeros(4)  # the rest of BLIP is ignored
    (tmp_path / "blip").mkdir()
    save_file(state, str(tmp_path / "blip" / "model.safetensors"))
    backbone = _load("blip_base@64", weights=str(tmp_path / "blip"))
    assert backbone.weights_sha256 == sha256_file(tmp_path / "blip" / "model.safetensors")
    x = torch.randn(2, 3, 64, 64)
    ours = _all(backbone, x)
    with torch.no_grad():
        out = tower(pixel_values=x, interpolate_pos_encoding=True)
    torch.testing.assert_close(ours["cls"], out.last_hidden_state[:, 0])
    torch.testing.assert_close(ours["pooled"], out.pooler_output)
    torch.testing.assert_close(ours["mean_patch"], out.last_hidden_state[:, 1:].mean(1))
    save_file({"vision_model.other.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="do not fit this model .*unexpected keys"):
        _load("blip_base", weights=str(tmp_path / "other.safetensors"))


# ---------------------------------------------------------------------- SEEM
class _RefPatchEmbed(nn.Module):
    """SEEM's PatchEmbed with USE_CONV_EMBED: pad right/bottom to the stride, conv, LayerNorm."""

    def __init__(self, cin: int, cout: int, stem: bool) -> None:
        super().__init__()
        kernel, self.stride, pad = (7, 4, 3) if stem else (3, 2, 1)
        self.proj = nn.Conv2d(cin, cout, kernel, self.stride, pad)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, (-x.shape[-1]) % self.stride, 0, (-x.shape[-2]) % self.stride))
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _RefModulation(nn.Module):
    """Focal modulation on channels-last tokens: Linear f and proj, 1x1 conv h, SCALING_MODULATOR."""

    def __init__(self, dim: int, levels: int = 3, window: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.f = nn.Linear(dim, 2 * dim + levels + 1)
        self.h = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Linear(dim, dim)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, 2 * k + window, padding=(2 * k + window) // 2, groups=dim, bias=False), nn.GELU()
            )
            for k in range(levels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        c = x.shape[-1]
        q, ctx, gates = torch.split(self.f(x).permute(0, 3, 1, 2), [c, c, self.levels + 1], dim=1)
        total = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            total = total + ctx * gates[:, level : level + 1]
        total = total + F.gelu(ctx.mean((2, 3), keepdim=True)) * gates[:, self.levels :]
        return self.proj((q * self.h(total / (self.levels + 1))).permute(0, 2, 3, 1))


class _RefBlock(nn.Module):
    """focal_dw block, USE_POSTLN and USE_LAYERSCALE: norms after the residual sums."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = _RefModulation(dim)
        self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma_1 = nn.Parameter(torch.ones(dim))
        self.gamma_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        x = x + self.dw1(x)
        t = x.permute(0, 2, 3, 1)
        t = self.norm1(t + self.gamma_1 * self.modulation(t))
        x = t.permute(0, 3, 1, 2)
        x = x + self.dw2(x)
        t = x.permute(0, 2, 3, 1)
        return self.norm2(t + self.gamma_2 * self.mlp(t)).permute(0, 3, 1, 2)


class _RefLayer(nn.Module):
    def __init__(self, dim: int, depth: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_RefBlock(dim) for _ in range(depth))
        if downsample:
            self.downsample = _RefPatchEmbed(dim, 2 * dim, stem=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if hasattr(self, "downsample") else x)


class ReferenceSeemFocalT(nn.Module):
    """An independent re-implementation of SEEM's `focal_dw` FocalNet-T, in SEEM's module names
    (so its state dict has SEEM's checkpoint keys) and SEEM's tensor layouts (Linear layers)."""

    def __init__(self) -> None:
        super().__init__()
        dims, depths = (96, 192, 384, 768), (2, 2, 6, 2)
        self.patch_embed = _RefPatchEmbed(3, 96, stem=True)
        self.layers = nn.ModuleList(_RefLayer(d, n, i < 3) for i, (d, n) in enumerate(zip(dims, depths)))
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """res5 after norm3, (B, 768, H/32, W/32)."""
        x = self.patch_embed(x)
        for layer in self.layers:
            out, x = layer(x)
        return self.norm3(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# Key names and tensor ranks from a real SEEM checkpoint's listing (SEEM issue #61, a Focal-L
# checkpoint: same names as Focal-T, other widths), restricted to indices that exist in Focal-T.
REAL_SEEM_KEYS = {
    "backbone.layers.1.downsample.norm.weight": 1,
    "backbone.layers.1.downsample.proj.bias": 1,
    "backbone.layers.1.downsample.proj.weight": 4,
    "backbone.layers.2.blocks.0.gamma_1": 1,
    "backbone.layers.2.blocks.0.gamma_2": 1,
    "backbone.layers.2.blocks.0.mlp.fc1.bias": 1,
    "backbone.layers.2.blocks.0.mlp.fc1.weight": 2,
    "backbone.layers.2.blocks.0.mlp.fc2.bias": 1,
    "backbone.layers.2.blocks.0.mlp.fc2.weight": 2,
    "backbone.layers.2.blocks.0.modulation.f.bias": 1,
    "backbone.layers.2.blocks.0.modulation.f.weight": 2,
    "backbone.layers.2.blocks.0.modulation.focal_layers.0.0.weight": 4,
    "backbone.layers.2.blocks.0.modulation.focal_layers.2.0.weight": 4,
    "backbone.layers.2.blocks.0.modulation.h.bias": 1,
    "backbone.layers.2.blocks.0.modulation.h.weight": 4,
    "backbone.layers.2.blocks.0.modulation.proj.bias": 1,
    "backbone.layers.2.blocks.0.modulation.proj.weight": 2,
    "backbone.layers.2.blocks.0.norm1.weight": 1,
    "backbone.layers.2.blocks.0.norm2.bias": 1,
}


@pytest.fixture(scope="module")
def seem_checkpoint(tmp_path_factory) -> tuple[Path, ReferenceSeemFocalT]:
    """A whole-SEEM-style checkpoint: the reference backbone under `backbone.`, plus other heads."""
    torch.manual_seed(8)
    ref = ReferenceSeemFocalT().eval()
    with torch.no_grad():  # away from the identity-like init, so that every branch shows in the output
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if p.ndim == 1 and "norm" in name and "weight" in name else 0))
        for name, p in ref.named_parameters():
            if "gamma" in name:
                p.copy_(0.5 + 0.1 * torch.randn_like(p))
    state = {f"backbone.{k}": v for k, v in ref.state_dict().items()}
    state["sem_seg_head.predictor.query_feat.weight"] = torch.zeros(101, 512)
    state["sem_seg_head.pixel_decoder.mask_features.weight"] = torch.zeros(512, 512, 1, 1)
    path = tmp_path_factory.mktemp("seem") / "seem_focalt_v1.pt"
    torch.save(state, path)
    return path, ref


def test_reference_seem_layout_has_the_real_checkpoint_key_names(seem_checkpoint):
    path, ref = seem_checkpoint
    state = torch.load(path, weights_only=True)
    for key, rank in REAL_SEEM_KEYS.items():
        assert key in state and state[key].ndim == rank, key
    assert state["backbone.layers.2.blocks.0.modulation.f.weight"].shape == (2 * 384 + 4, 384)
    assert state["backbone.layers.2.blocks.0.modulation.focal_layers.2.0.weight"].shape == (384, 1, 7, 7)
    assert {"backbone.patch_embed.proj.weight", "backbone.norm3.weight", "backbone.layers.0.blocks.1.dw2.bias"} <= set(
        state
    )


@pytest.mark.parametrize("size", [64, 72])
def test_seem_checkpoint_is_remapped_onto_timm_focalnet(seem_checkpoint, size):
    """72 px exercises SEEM's padding of odd feature maps (18 -> 9 -> pad 10 -> 5 -> pad 6 -> 3)."""
    path, ref = seem_checkpoint
    backbone = _load(f"seem_focalt@{size}", weights=str(path))
    assert backbone.weights_sha256 == sha256_file(path)
    assert backbone.num_parameters == 29_920_944
    # in float64, so that twelve blocks of float32 rounding (Linear vs 1x1 conv) cannot hide a real difference
    backbone.module.double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected = copy.deepcopy(ref).double()(x)
    ours = _all(backbone, x)
    torch.testing.assert_close(ours["spatial_map"], expected)
    torch.testing.assert_close(ours["gap"], expected.mean((2, 3)))


def test_seem_without_a_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as info:
        _load("seem_focalt")
    message = str(info.value)
    assert "\n" not in message and "huggingface.co/xdecoder/SEEM" in message and "weights =" in message
    torch.save({"model.layer.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a SEEM checkpoint"):
        _load("seem_focalt", weights=str(tmp_path / "other.pt"))


# ---------------------------------------------------------------------- offline, and the runner
@pytest.mark.parametrize(
    "name, needle",
    [
        ("dinov2_vits14", "timm/vit_small_patch14_dinov2.lvd142m"),
        ("sam_vitb", "timm/samvit_base_patch16.sa1b"),
        ("openclip_vitb16_laion2b", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("blip_base", "Salesforce/blip-image-captioning-base"),
        ("hf/facebook/dinov2-small", "huggingface-cli download facebook/dinov2-small"),
        ("resnet50", "download.pytorch.org/models/resnet50-0676ba61.pth"),
    ],
)
def test_offline_without_weights_is_one_clear_line(name, needle):
    with pytest.raises(UserError) as info:
        _load(name)
    message = str(info.value)
    assert "\n" not in message and needle in message and "weights = " in message and name in message, message


def test_run_records_the_weight_file_and_feature_kind(dinov2_s_checkpoint, tiny_config):
    path, _ = dinov2_s_checkpoint
    tiny_config.backbones = ["dinov2_vits14@56"]
    tiny_config.protocols = ["knn"]
    tiny_config.options["backbone"] = {"dinov2_vits14*": {"weights": str(path)}}
    (outcome,) = Runner(REGISTRY, tiny_config).run()
    assert outcome.status == "ok", outcome.message
    record = load_record(outcome.record_path, verify=True)
    assert record["backbone"]["weights_sha256"] == sha256_file(path)
    assert record["backbone"]["feature_kind"] == "cls" and record["backbone"]["preprocessing"]["size"] == 56
    assert record["backbone"]["params"] == 21_628_800 - (257 - 17) * 384  # 4x4+1 positions instead of 16x16+1
