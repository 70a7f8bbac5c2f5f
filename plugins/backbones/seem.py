"""SEEM's vision backbone: the FocalNet-T of SEEM's Focal-T checkpoints, built on timm's FocalNet.

SEEM (Zou et al. 2023) configures its ``focal_dw`` backbone as FocalNet-T (depths 2-2-6-2,
width 96, three focal levels of window 3 in every stage) with an overlapping convolutional
stem and downsampling (``USE_CONV_EMBED``), context scaling (``SCALING_MODULATOR``), layer
scale and post-layer-norm blocks. Two things in ``focal_dw`` are not expressible with timm's
FocalNet arguments, so its modules are adapted after timm builds them:

- each block has a depth-wise 3x3 convolution with residual before the modulation (``dw1``)
  and before the MLP (``dw2``), and its post-norms wrap the residual sums
  (``x = norm1(x + gamma_1 * modulation(x))``), where timm's post-norm normalises the branch;
- the stem convolution pads by 3 (timm: 2), and every patch embedding pads its input on the
  right and bottom to a multiple of its stride, as SEEM's ``PatchEmbed`` does.

Everything else (modulation, MLP, layer scale, norms) is timm's, with SEEM's key names mapped
by ``remap_seem_checkpoint``. Features: ``res5`` after SEEM's ``norm3`` (768 channels, stride
32), globally averaged (``gap``) or as a map. The per-scale norms of res2-res4 (norm0-norm2,
1,344 parameters) are not used for classification features and are left out.

There is no hub id: the weights are read from a SEEM checkpoint file given as ``weights``.
Parameter count: 29,920,944, the published 29.9M.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.models.focalnet import FocalNet, FocalNetBlock
from torch import nn

from medfm import Backbone, BackboneSpec, Preprocessing, UserError, hookimpl
from medfm.io import sha256_file_memo
from medfm.weights import load_into, load_state_dict, resolve_weights_path, strip_prefixes

from ._common import check_options, spec_preprocessing

CHECKPOINT_URL = "https://huggingface.co/xdecoder/SEEM/resolve/main/seem_focalt_v1.pt"
PARAMS = 29_920_944
CITATION = "Zou, X. et al. Segment Everything Everywhere All at Once. NeurIPS 2023. arXiv:2304.06718"
#: SEEM's FOCAL config for Focal-T (configs/seem/focalt_unicl_lang_*.yaml), as timm FocalNet arguments
SEEM_FOCALT = dict(embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3), focal_windows=(3, 3, 3, 3),
                   mlp_ratio=4.0, use_overlap_down=True, normalize_modulator=True, layerscale_value=1e-4,
                   use_post_norm=False, use_post_norm_in_modulation=False, drop_path_rate=0.0)
_UNUSED = re.compile(r"norm[0-2]\.(weight|bias)")  # res2-res4 output norms


class SeemPatchEmbed(nn.Module):
    """timm's ``Downsample`` (same ``proj``/``norm`` keys) with SEEM's right/bottom input padding."""

    def __init__(self, proj: nn.Conv2d, norm: nn.Module, stride: int) -> None:
        super().__init__()
        self.proj, self.norm, self.stride = proj, norm, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad to a multiple of the stride, convolve, normalise."""
        pad_h, pad_w = (-x.shape[-2]) % self.stride, (-x.shape[-1]) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x))


class SeemFocalBlock(nn.Module):
    """SEEM's ``focal_dw`` block (post-norm variant) around a timm block's modules."""

    def __init__(self, block: FocalNetBlock) -> None:
        super().__init__()
        dim = block.dim
        self.dw1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1, self.modulation, self.ls1 = block.norm1, block.modulation, block.ls1
        self.dw2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm2, self.mlp, self.ls2 = block.norm2, block.mlp, block.ls2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW in and out."""
        x = x + self.dw1(x)
        x = self.norm1(x + self.ls1(self.modulation(x)))
        x = x + self.dw2(x)
        return self.norm2(x + self.ls2(self.mlp(x)))


def build_seem_focalt() -> FocalNet:
    """SEEM's Focal-T backbone, randomly initialised (timm FocalNet, SEEM's blocks and padding)."""
    model = FocalNet(num_classes=0, **SEEM_FOCALT)
    stem = model.stem
    stem.proj.padding = (3, 3)  # SEEM's stem: kernel 7, stride 4, padding 3
    model.stem = SeemPatchEmbed(stem.proj, stem.norm, stride=4)
    for stage in model.layers:
        if not isinstance(stage.downsample, nn.Identity):
            stage.downsample = SeemPatchEmbed(stage.downsample.proj, stage.downsample.norm, stride=2)
        stage.blocks = nn.ModuleList([SeemFocalBlock(b) for b in stage.blocks])
    return model


def remap_seem_checkpoint(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A SEEM checkpoint (whole model, ``backbone.`` keys) to this model's keys; strict on both sides.

    SEEM names: ``backbone.patch_embed`` (stem), ``backbone.layers.{i}.downsample`` (end of
    stage i; timm: start of stage i+1), ``gamma_1``/``gamma_2`` (layer scale), Linear
    ``modulation.f``/``modulation.proj``/``mlp.fc1``/``mlp.fc2`` (timm: 1x1 convolutions),
    ``backbone.norm3`` (the res5 norm; timm: ``norm``).
    """
    state = strip_prefixes(state, ("module.", "model."))
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        raise UserError("the checkpoint holds no `backbone.` weights: it is not a SEEM checkpoint")
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in backbone.items():
        if _UNUSED.fullmatch(key):
            continue
        new = re.sub(r"^patch_embed\.", "stem.", key)
        new = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", new)
        new = re.sub(r"\.gamma_([12])$", r".ls\1.gamma", new)
        new = re.sub(r"^norm3\.", "norm.", new)
        if new in target and value.shape != target[new].shape and value.numel() == target[new].numel():
            value = value.reshape(target[new].shape)  # Linear (out, in) -> 1x1 conv (out, in, 1, 1)
        out[new] = value
    missing, unexpected = sorted(set(target) - set(out)), sorted(set(out) - set(target))
    wrong = sorted(k for k in set(out) & set(target) if out[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        raise UserError(f"the checkpoint's backbone is not SEEM Focal-T: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}")
    return out


class SeemBackbone(Backbone):
    """SEEM's FocalNet-T: res5 (768 channels) as a map or globally averaged."""

    attention_projections: tuple[str, ...] = ()  # focal modulation, no attention

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, sha: str | None, source: str) -> None:
        self.module = model
        self.preprocessing = preprocessing
        self.weights_sha256, self.weights_source = sha, source
        self.feature_dims = {"gap": int(model.num_features), "spatial_map": int(model.num_features)}
        self.default_kind = "gap"

    def blocks(self) -> list[nn.Module]:
        """The twelve focal modulation blocks, in order."""
        return [block for stage in self.module.layers for block in stage.blocks]

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """res5 after SEEM's norm3."""
        fmap = self.module.forward_features(images)
        return {k: fmap.mean((2, 3)) if k == "gap" else fmap for k in kinds}


def load_seem(spec: BackboneSpec, **options: Any) -> SeemBackbone:
    """From the SEEM checkpoint given as ``weights``; ``pretrained = false`` for random weights."""
    check_options(spec, options)
    weights, pretrained = options.get("weights"), options.get("pretrained", True)
    model = build_seem_focalt()
    sha, source = None, "random initialisation (seeded)"
    if weights:
        path = resolve_weights_path(weights, spec.name)
        load_into(model, remap_seem_checkpoint(load_state_dict(path), model), path, spec.name)
        sha, source = sha256_file_memo(path), f"local file {path}"
    elif pretrained:
        raise UserError(f"backbone {spec.name!r} has no hub id: download SEEM's Focal-T checkpoint "
                        f"({CHECKPOINT_URL}) and set `weights = \"/path/to/seem_focalt_v1.pt\"` under "
                        f"[backbone.\"{spec.name}\"] in your run config")
    return SeemBackbone(model.eval(), spec_preprocessing(spec), sha, source)


@hookimpl
def register_backbones(register):
    """SEEM Focal-T."""
    register(BackboneSpec(
        name="seem_focalt", load=load_seem, family="seem", params=PARAMS, embed_dim=768, input_size=224,
        # SEEM's PIXEL_MEAN / PIXEL_STD (ImageNet, in 0-255); its demo resizes with bicubic
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
        pretraining="COCO panoptic, referring and interactive segmentation (backbone from X-Decoder/UniCL)",
        objective="segmentation", license="Apache-2.0", citation=CITATION, revision="seem_focalt_v1",
        feature_kinds=("gap", "spatial_map"),
        description="SEEM Focal-T vision backbone (FocalNet-T); weights only from a SEEM checkpoint file "
                    f"({CHECKPOINT_URL}) given as `weights`"))
