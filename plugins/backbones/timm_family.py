"""``timm/<any timm model>`` (pretrained) and ``random/<any timm model>`` (random initialisation).

Weights come from the Hugging Face hub through timm, or from a local file or folder given
as the ``weights`` option (offline sites). ``pretrained = false`` builds a ``timm/`` member
randomly initialised; a ``random/`` member always is, so its ``pretrained`` may only be
``false``. Listing never builds a model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from medfm.backbones import (
    BackboneFamily,
    BackboneSpec,
    UserError,
    check_options,
    common_options,
    guess_objective,
    hookimpl,
    offline_message,
    one_of,
    resolve_weights_path,
    sha256_file_memo,
    short_reason,
)

# timm, torch and medfm.timm_backbone are imported inside the functions that need them:
# listing the registry imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch

    from medfm.backbones import TimmBackbone

TIMM_CITATION = "Wightman, R. PyTorch Image Models. https://github.com/huggingface/pytorch-image-models"


@lru_cache(maxsize=1)
def _all_models() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@lru_cache(maxsize=1)
def _all_pretrained() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models(pretrained=True))


def _pretrained_cfg(name: str) -> dict[str, Any]:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


def _check_name(name: str) -> str:
    arch = name.split(".", 1)[0]
    if arch not in _all_models():
        raise KeyError(f"timm has no model {arch!r}")
    return arch


def create_timm_model(
    name: str, pretrained: bool, size: int | None, weights: str | None = None, backbone: str = ""
) -> tuple[torch.nn.Module, str | None, str]:
    """Build a timm model without its classifier; return (model, weights sha256, source)."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0}
    sha, source = None, "random initialisation (seeded)"
    if weights:
        path = resolve_weights_path(weights, backbone)
        kwargs["pretrained_cfg_overlay"] = {"file": str(path), "hf_hub_id": None, "url": None}
        sha, source, pretrained = sha256_file_memo(path), f"local file {path}", True
    arch_default = _pretrained_cfg(name).get("input_size", (3, 224, 224))[-1]
    if size and size != arch_default:
        kwargs["img_size"] = size
    try:
        try:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError as exc:
            if "img_size" not in kwargs or "img_size" not in str(exc):
                raise
            kwargs.pop("img_size")  # CNNs take any resolution as they are
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if weights:
            raise UserError(
                f"backbone {backbone!r}: cannot load weights {weights}: {type(exc).__name__}: {short_reason(exc, 200)}"
            ) from None
        if pretrained:
            hub = _pretrained_cfg(name).get("hf_hub_id") or name
            raise UserError(offline_message(backbone, f"the Hugging Face hub ({hub})", exc)) from None
        raise
    if pretrained and not weights:
        sha, source = (
            _hub_file_sha(model),
            f"hub {_hub_of(model)}",
        )
    return model, sha, source


def _hub_of(model: torch.nn.Module) -> str | None:
    """Where timm fetched the pretrained weights from: a hub id, or a URL."""
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("hf_hub_id") or cfg.get("url")


def _hub_file_sha(model: torch.nn.Module) -> str | None:
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(hub_id, fname)
            if isinstance(path, str):
                return sha256_file_memo(path)
    except Exception:
        return None
    return None


def _spec(name: str, prefix: str, pretrained: bool) -> BackboneSpec:
    import timm

    arch = _check_name(name)
    cfg = _pretrained_cfg(name)
    full = prefix + name

    def load(spec: BackboneSpec, **options: Any) -> TimmBackbone:
        check_options(spec, options)
        if not pretrained and options.get("pretrained"):
            raise UserError(
                f"backbone {spec.name!r} is randomly initialised: `pretrained = true` is for timm/{name}; "
                "or give local `weights`"
            )
        from medfm.backbones import TimmBackbone, preprocessing_from_timm

        weights = options.get("weights")
        model, sha, source = create_timm_model(
            name, options.get("pretrained", pretrained), spec.input_size, weights, spec.name
        )
        return TimmBackbone(model, preprocessing_from_timm(model, spec.input_size), sha, source)

    return BackboneSpec(
        name=full,
        load=load,
        family=prefix.rstrip("/"),
        params=None,
        embed_dim=None,
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bicubic", "bilinear", "nearest")
        else "bicubic",
        pretraining=(cfg.get("tag") or "timm default") if pretrained else "none (random initialisation)",
        # a family member carries no curated metadata: the objective is guessed from its name and tag
        objective=guess_objective(name) if pretrained else "none",
        license=cfg.get("license", "") or "see the model card",
        citation=cfg.get("paper_ids", "") or TIMM_CITATION,
        revision=f"timm-{timm.__version__}",
        feature_kinds=(),
        description=f"timm {arch}" + ("" if pretrained else ", randomly initialised"),
        # random/ members are random by definition: `pretrained` may only repeat that (false)
        options=common_options(pretrained=pretrained),
        limits={} if pretrained else {"pretrained": one_of(False)},
    )


@hookimpl
def register_backbones(register):
    """The two timm families."""
    register(
        BackboneFamily(
            "timm/",
            lambda name: _spec(name, "timm/", True),
            candidates=_all_pretrained,
            description="Any timm model with its pretrained weights (hub, or a local `weights` file or folder).",
            examples=("timm/vit_small_patch14_dinov2", "timm/resnet50.a1_in1k"),
            license="per model",
            citation=TIMM_CITATION,
        )
    )
    register(
        BackboneFamily(
            "random/",
            lambda name: _spec(name, "random/", False),
            candidates=lambda: sorted(_all_models()),
            description="Any timm architecture, randomly initialised (seeded): the no-pretraining baseline.",
            examples=("random/resnet18", "random/tf_efficientnet_lite0"),
            license="Apache-2.0",
            citation=TIMM_CITATION,
        )
    )
