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
from typing import TYPE_CHECKING, Any, Sequence

from medfm.backbones import (
    Backbone,
    BackboneSpec,
    Preprocessing,
    UserError,
    check_options,
    common_options,
    hookimpl,
    load_into,
    load_state_dict,
    resolve_weights_path,
    sha256_file_memo,
    spec_preprocessing,
    strip_prefixes,
)

# torch and timm are imported only when the model is built: its modules (SeemPatchEmbed,
# SeemFocalBlock, build_seem_focalt) live in ._seem_model, imported on use, because listing
# the registry imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch
    from torch import nn

#: names re-exported from ._seem_model by ``__getattr__`` (importing them imports torch and timm)
_MODEL_NAMES = ("SeemPatchEmbed", "SeemFocalBlock", "build_seem_focalt")

CHECKPOINT_URL = "https://huggingface.co/xdecoder/SEEM/resolve/main/seem_focalt_v1.pt"
PARAMS = 29_920_944
CITATION = "Zou, X. et al. Segment Everything Everywhere All at Once. NeurIPS 2023. arXiv:2304.06718"
#: SEEM's FOCAL config for Focal-T (configs/seem/focalt_unicl_lang_*.yaml), as timm FocalNet arguments
SEEM_FOCALT: dict[str, Any] = dict(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    focal_levels=(3, 3, 3, 3),
    focal_windows=(3, 3, 3, 3),
    mlp_ratio=4.0,
    use_overlap_down=True,
    normalize_modulator=True,
    layerscale_value=1e-4,
    use_post_norm=False,
    use_post_norm_in_modulation=False,
    drop_path_rate=0.0,
)
_UNUSED = re.compile(r"norm[0-2]\.(weight|bias)")  # res2-res4 output norms


def remap_seem_checkpoint(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A SEEM checkpoint (whole model, ``backbone.`` keys) to this model's keys; strict on both sides.

    SEEM names: ``backbone.patch_embed`` (stem), ``backbone.layers.{i}.downsample`` (end of
    stage i; timm: start of stage i+1), ``gamma_1``/``gamma_2`` (layer scale), Linear
    ``modulation.f``/``modulation.proj``/``mlp.fc1``/``mlp.fc2`` (timm: 1x1 convolutions),
    ``backbone.norm3`` (the res5 norm; timm: ``norm``).
    """
    state = strip_prefixes(state, ("module.", "model."))
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
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
        raise UserError(
            f"the checkpoint's backbone is not SEEM Focal-T: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}"
        )
    return out


class SeemBackbone(Backbone):
    """SEEM's FocalNet-T: res5 (768 channels) as a map or globally averaged."""

    attention_projections: tuple[str, ...] = ()  # focal modulation, no attention

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, sha: str | None, source: str) -> None:
        self.module = model
        self.preprocessing = preprocessing
        self.weights_sha256, self.weights_source = sha, source
        focalnet: Any = model  # timm FocalNet's attributes are not typed
        width = int(focalnet.num_features)
        self.feature_dims = {"gap": width, "spatial_map": width}
        self.default_kind = "gap"

    def blocks(self) -> list[nn.Module]:
        """The twelve focal modulation blocks, in order."""
        stages: Any = self.module.get_submodule("layers")
        return [block for stage in stages for block in stage.blocks]

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """res5 after SEEM's norm3."""
        model: Any = self.module  # timm FocalNet's forward_features
        fmap = model.forward_features(images)
        return {k: fmap.mean((2, 3)) if k == "gap" else fmap for k in kinds}


def load_seem(spec: BackboneSpec, **options: Any) -> SeemBackbone:
    """From the SEEM checkpoint given as ``weights``; ``pretrained = false`` for random weights."""
    check_options(spec, options)
    from ._seem_model import build_seem_focalt

    weights, pretrained = options.get("weights"), options.get("pretrained", True)
    model = build_seem_focalt()
    sha, source = None, "random initialisation (seeded)"
    if weights:
        path = resolve_weights_path(weights, spec.name)
        load_into(model, remap_seem_checkpoint(load_state_dict(path), model), path, spec.name)
        sha, source = sha256_file_memo(path), f"local file {path}"
    elif pretrained:
        raise UserError(
            f"backbone {spec.name!r} has no hub id: download SEEM's Focal-T checkpoint "
            f'({CHECKPOINT_URL}) and set `weights = "/path/to/seem_focalt_v1.pt"` under '
            f'[backbone."{spec.name}"] in your run config'
        )
    return SeemBackbone(model.eval(), spec_preprocessing(spec), sha, source)


@hookimpl
def register_backbones(register):
    """SEEM Focal-T."""
    register(
        BackboneSpec(
            name="seem_focalt",
            load=load_seem,
            family="seem",
            params=PARAMS,
            embed_dim=768,
            input_size=224,
            # SEEM's PIXEL_MEAN / PIXEL_STD (ImageNet, in 0-255); its demo resizes with bicubic
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            interpolation="bicubic",
            pretraining="COCO panoptic, referring and interactive segmentation (backbone from X-Decoder/UniCL)",
            objective="segmentation",
            license="Apache-2.0",
            citation=CITATION,
            revision="seem_focalt_v1",
            feature_kinds=("gap", "spatial_map"),
            description="SEEM Focal-T vision backbone (FocalNet-T); weights only from a SEEM checkpoint file "
            f"({CHECKPOINT_URL}) given as `weights`",
            options=common_options(),
        )
    )


def __getattr__(name: str) -> Any:
    """The model's modules, from ._seem_model (imports torch and timm) on first use."""
    if name in _MODEL_NAMES:
        from . import _seem_model

        return getattr(_seem_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
